"""How `web` serves HTTP: gunicorn's master (the same config module, hooks and worker count),
with uvicorn workers whose event loop reads each request whole before a thread runs Flask.

A sync worker is held by whoever connects to it: one client announcing a large body and
sending a byte at a time held a worker for gunicorn's whole `timeout` (30 s), and as many such
clients as workers starved the service. Here a slow client only holds a socket in an event
loop: its body is read without a thread, within BODY_TIMEOUT_SECONDS (408 after that), and at
most `max_body_bytes` of it (413), whether it comes with a Content-Length or chunked. Malformed
framing (duplicate or conflicting Content-Length / Transfer-Encoding, bad chunk sizes, obs-fold,
NUL bytes, heads over 16 KiB) is refused by h11 with a 400 before any of our code runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from a2wsgi import WSGIMiddleware
from uvicorn_worker import UvicornWorker

from relay.telemetry.logs import REQUEST_ID_HEADER

BODY_TIMEOUT_SECONDS = 10.0
THREADS_PER_WORKER = 4
access_log = logging.getLogger("gunicorn.access")


class RelayWorker(UvicornWorker):
    """gunicorn `worker_class` (service.http.gunicorn_conf): h11 refuses malformed framing and
    bounds the request head (16 KiB, `h11_max_incomplete_event_size`); uvicorn's own access
    log is off, because it writes the client address and the query string."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "lifespan": "off", "access_log": False}

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = getattr(self, "wsgi")  # noqa: B009 (untyped in gunicorn)
        # Flask's MAX_CONTENT_LENGTH is `max_body_bytes` (service/__init__.py).
        self.wsgi = BufferedBody(app, getattr(app, "config", {}).get("MAX_CONTENT_LENGTH"))


class BufferedBody:
    """ASGI in front of a WSGI app: read the body in the event loop, then let a2wsgi run the
    app in a thread over the bytes already read. The app sees a Content-Length, never chunks."""

    def __init__(
        self,
        wsgi_app: Any,
        max_body_bytes: int | None,
        *,
        threads: int = THREADS_PER_WORKER,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
    ):
        self._app: Any = WSGIMiddleware(wsgi_app, workers=threads)  # ASGI types: plain dicts here
        self._max = max_body_bytes
        self._timeout = body_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        response = _Recorder(scope, send, time.monotonic())
        declared = _content_length(scope["headers"])
        if declared is not None and _header(scope["headers"], b"transfer-encoding"):
            # Framing two parties may read differently (request smuggling): refuse and close
            # (RFC 9112 section 6.1, https://www.rfc-editor.org/rfc/rfc9112#section-6.1).
            return await response.problem(400, "ambiguous-framing", "Bad Request")
        if declared is not None and self._max is not None and declared > self._max:
            # Flask answers 413 from the announced length alone; the body is never read.
            return await self._app(scope, _replay(b""), response.closing())
        try:
            body, complete = await asyncio.wait_for(self._read(receive), self._timeout)
        except TimeoutError:
            return await response.problem(408, "request-timeout", "Request Timeout")
        if body is None:
            return  # the client left before sending its whole body
        # Over the limit (chunked): announce more than the limit, so Flask answers its 413.
        scope = {**scope, "headers": _with_length(scope["headers"], len(body))}
        return await self._app(scope, _replay(body), response if complete else response.closing())

    async def _read(self, receive: Any) -> tuple[bytes | None, bool]:
        """The body, and whether it is whole (False: over the limit, the rest left unread)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if self._max is not None and size > self._max:
                return b"".join(chunks), False
            if not message.get("more_body", False):
                return b"".join(chunks), True


class _Recorder:
    """Wraps `send`: one JSON access line per answer (path without its query string: a query
    may carry an e-mail address), and `Connection: close` when the body was left unread."""

    def __init__(self, scope: dict[str, Any], send: Any, started: float, close: bool = False):
        self._scope, self._send, self._started, self._close = scope, send, started, close
        self._status: int | None = None
        self._request_id: str | None = None
        self._sent = 0

    def closing(self) -> _Recorder:
        return _Recorder(self._scope, self._send, self._started, close=True)

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            headers = list(message.get("headers", []))
            self._request_id = _header(headers, REQUEST_ID_HEADER.lower().encode())
            if self._close:
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        elif message["type"] == "http.response.body":
            self._sent += len(message.get("body", b""))
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._log()

    async def problem(self, status: int, slug: str, title: str) -> None:
        body = json.dumps(
            {"type": f"urn:consent-relay:problem:{slug}", "title": title, "status": status}
        ).encode()
        self._close = True
        headers = [(b"content-type", b"application/problem+json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await self({"type": "http.response.start", "status": status, "headers": headers})
        await self({"type": "http.response.body", "body": body})

    def _log(self) -> None:
        client = self._scope.get("client")
        access_log.info(
            "request",
            extra={
                "method": self._scope.get("method"),
                "path": self._scope.get("path"),
                "status": self._status,
                "bytes": self._sent,
                "duration_ms": round((time.monotonic() - self._started) * 1000, 1),
                "request_id": self._request_id,
                "remote_addr": client[0] if client else None,
            },
        )


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    # h11 has already refused a malformed, negative or repeated-and-different Content-Length.
    value = _header(headers, b"content-length")
    return int(value) if value is not None else None


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    framing = (b"content-length", b"transfer-encoding")
    kept = [(k, v) for k, v in headers if k.lower() not in framing]
    return [*kept, (b"content-length", str(length).encode())]


def _replay(body: bytes) -> Any:
    """`receive` for the app: the body already read, in one message."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # ASGI: after the last body message, only the disconnect is left to receive
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
