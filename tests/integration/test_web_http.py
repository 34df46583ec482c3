"""Malformed HTTP and slow clients over raw sockets, against gunicorn started as in production
(`--config python:service.http.gunicorn_conf`, so the same worker class): every malformed request
is answered 4xx or closed, no worker ever exits, and /healthz keeps answering while clients
stall. Liveness bounds only (generous), never performance."""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from service.http.web import BODY_TIMEOUT_SECONDS
from tests.helpers.support import (
    Process,
    decision,
    free_port,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
MAX_BODY = 200_000
WORKERS = 2
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n"
_NOWHERE = "http://127.0.0.1:9"  # Engage is never reached here: nothing is delivered
DEATHS = ("exited with code", "Worker exiting", "WORKER TIMEOUT", "Exception in worker process")


@dataclass
class Web:
    port: int
    process: Process

    def worker_pids(self) -> set[int]:
        """The master's children, from /proc (Linux): a worker that died is replaced by a
        new pid."""
        children = Path(f"/proc/{self.process.proc.pid}/task/{self.process.proc.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def deaths(self) -> list[str]:
        return [
            line for line in self.process.output().splitlines() if any(d in line for d in DEATHS)
        ]


def _start(workdir: Path, *extra: str) -> Web:
    config = write_config(workdir / "relay.toml", data_dir=workdir / "var", engage_url=_NOWHERE)
    text = config.read_text().replace("[service]", f"[service]\nmax_body_bytes = {MAX_BODY}", 1)
    config.write_text(text)
    upgrade(make_engine(load_settings(config, environ={}).database_url))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"CONSENT_RELAY_CONFIG": str(config), "PORT": str(port), "WEB_CONCURRENCY": "2"}
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:service.http.gunicorn_conf",
        *extra,
    ]
    process = Process([*argv, "service:create_app()"], env, workdir, workdir / "web.log")
    web = Web(port, process)
    wait_for(lambda: _status(web, HEALTH + b"\r\n") == 200, 60, "web /healthz")
    wait_for(lambda: len(web.worker_pids()) == WORKERS, 30, "both workers")
    return web


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    web = _start(tmp_path_factory.mktemp("web"))
    yield web
    web.process.stop()


def _exchange(web: Web, raw: bytes, *, half_close: bool = False, timeout: float = 15) -> bytes:
    """Send `raw`; the answer (b"" when the server closed without one)."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            return _read_answer(sock)
        except ConnectionResetError:
            return b""


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def _read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def _status(web: Web, raw: bytes, **kw: bool) -> int | None:
    """The status code answered, None for a closed connection."""
    try:
        answer = _exchange(web, raw, **kw)
    except OSError:
        return None
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def _get(*headers: bytes, body: bytes = b"", line: bytes = b"GET /healthz HTTP/1.1") -> bytes:
    return b"\r\n".join([line, b"Host: relay", *headers]) + b"\r\n\r\n" + body


def _chunked(body: bytes, path: bytes = b"/webhooks/signup", **headers: str) -> bytes:
    head = [f"{name.replace('_', '-')}: {value}".encode() for name, value in headers.items()]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in _parts(body, 4096))
    return _get(b"Transfer-Encoding: chunked", *head, line=b"POST " + path + b" HTTP/1.1") + (
        chunks + b"0\r\n\r\n"
    )


def _parts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# Every shape from the issue, and more. None: the connection may be closed without an answer.
MALFORMED: dict[str, tuple[bytes, set[int | None]]] = {
    "two different lengths": (
        _get(b"Content-Length: 0", b"Content-Length: 5", body=b"hello"),
        {400},
    ),
    "length and chunked": (
        _get(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        {400},
    ),
    "negative length": (_get(b"Content-Length: -1"), {400}),
    "plus length": (_get(b"Content-Length: +5", body=b"hello"), {400}),
    "length list": (_get(b"Content-Length: 1, 2", body=b"ab"), {400}),
    "hex length": (_get(b"Content-Length: 0x5", body=b"hello"), {400}),
    "huge length digits": (_get(b"Content-Length: " + b"9" * 40), {400, 413}),
    "chunked twice": (
        _get(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        {400},
    ),
    "chunked, chunked": (
        _get(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
        {400},
    ),
    "gzip coding": (_get(b"Transfer-Encoding: gzip"), {400}),
    "gzip, chunked": (_get(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), {400}),
    "NUL in a value": (_get(b"X-Probe: a\x00b"), {400}),
    "NUL in a name": (_get(b"X-Pro\x00be: a"), {400}),
    "CR in a value": (_get(b"X-Probe: a\rb"), {400}),
    "space before colon": (_get(b"X-Probe : a"), {400}),
    "no colon": (_get(b"X-Probe"), {400}),
    "bad version": (_get(line=b"GET /healthz HTTX/1.1"), {400}),
    "bad method": (_get(line=b"G@T /healthz HTTP/1.1"), {400}),
    "no target": (_get(line=b"GET HTTP/1.1"), {400}),
    "overlong request line": (_get(line=b"GET /" + b"a" * 70_000 + b" HTTP/1.1"), {400, 404, 414}),
    "overlong header": (_get(b"X-Probe: " + b"a" * 200_000), {400, 431}),
    "many headers": (_get(*[b"X-P%d: v" % i for i in range(30_000)]), {400, 431}),
    "chunk size ZZ": (_get(b"Transfer-Encoding: chunked", body=b"ZZ\r\nabc\r\n0\r\n\r\n"), {400}),
    "negative chunk size": (
        _get(b"Transfer-Encoding: chunked", body=b"-1\r\na\r\n0\r\n\r\n"),
        {400},
    ),
    "huge chunk size": (
        _get(b"Transfer-Encoding: chunked", body=b"f" * 40 + b"\r\na\r\n0\r\n\r\n"),
        {400, 413, None},
    ),
    "chunk without CRLF": (
        _get(b"Transfer-Encoding: chunked", body=b"3\r\nabcXX0\r\n\r\n"),
        {400, None},
    ),
}

# Also allowed by RFC 9110/9112 and answered normally: identical duplicate lengths (RFC 9110
# section 8.6, "MAY ... replace the duplicated field values with a single valid Content-Length")
# and obs-fold (RFC 9112 section 5.2, "MUST either reject ... or replace each received
# obs-fold with one or more SP octets"); h11 does the latter. Also bare LF line ends (RFC 9112
# section 2.2, "MAY recognize a single LF"), other control characters in a value (RFC 9110
# section 5.5, "MAY retain such characters") and a higher minor version (RFC 9110 section 2.5,
# a server "can" answer 505). None of them frames a body differently.
TOLERATED = {
    "bare LF line ends": b"GET /healthz HTTP/1.1\nHost: relay\n\n",
    "control character in a value": _get(b"X-Probe: a\x01b\x7f"),
    "HTTP/1.9": _get(line=b"GET /healthz HTTP/1.9"),
    "two zero lengths": _get(b"Content-Length: 0", b"Content-Length: 0"),
    "obs-fold": _get(b"X-Probe: a", b" b"),
}

# Truncated bodies: the client gives up (half-closes) before the body is whole.
TRUNCATED = {
    "body shorter than its length": _get(
        b"Content-Length: 50", body=b"short", line=b"POST /webhooks/signup HTTP/1.1"
    ),
    "last chunk missing": _get(
        b"Transfer-Encoding: chunked", body=b"10\r\nabc", line=b"POST /webhooks/signup HTTP/1.1"
    ),
}


def _framing_combinations() -> Iterator[tuple[str, bytes]]:
    """Each pair of framing headers from a list of odd values: whatever the pair, a 4xx or a
    normal answer, never a 5xx or a dead worker."""
    values = [
        b"Content-Length: 0",
        b"Content-Length: 3",
        b"Content-Length: -0",
        b"Content-Length: 3 ",
        b"Content-length: 3\x0b",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: identity",
        b"Transfer-Encoding: \x00chunked",
        b"Transfer-Encoding:chunked",
        b"Transfer-Encoding : chunked",
    ]
    for first, second in itertools.combinations(values, 2):
        yield f"{first!r} + {second!r}", _get(first, second, body=b"abc")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_refused_and_no_worker_dies(web: Web, case: str) -> None:
    raw, expected = MALFORMED[case]
    before = web.worker_pids()
    assert _status(web, raw) in expected
    assert _status(web, HEALTH + b"\r\n") == 200
    assert web.worker_pids() == before and not web.deaths()


def test_rfc_tolerated_shapes_are_answered(web: Web) -> None:
    for name, raw in TOLERATED.items():
        assert _status(web, raw) == 200, name
    assert not web.deaths()


def test_truncated_bodies_close_and_no_worker_dies(web: Web) -> None:
    before = web.worker_pids()
    for name, raw in TRUNCATED.items():
        assert _status(web, raw, half_close=True) in {None, 400}, name
    assert web.worker_pids() == before and not web.deaths()


def test_framing_header_pairs_never_kill_a_worker(web: Web) -> None:
    before = web.worker_pids()
    for name, raw in _framing_combinations():
        status = _status(web, raw)
        assert status is None or status < 500, name
    assert _status(web, HEALTH + b"\r\n") == 200
    assert web.worker_pids() == before and not web.deaths()


def _signed_chunked(body: bytes) -> bytes:
    headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
    return _chunked(body, **{name.replace("-", "_"): value for name, value in headers.items()})


def test_chunked_body_is_read_whole(web: Web) -> None:
    body = decision(f"chunked.{uuid.uuid4().hex[:8]}@example.org", "granted")
    padded = body[:-1] + b" " * 20_000 + b"}"  # several chunks
    assert _status(web, _signed_chunked(padded)) == 202


def test_chunked_body_over_the_limit_is_413(web: Web) -> None:
    body = b'{"email": "' + b"x" * (MAX_BODY + 10) + b'"}'
    answer = _exchange(web, _signed_chunked(body))
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"application/problem+json" in answer.lower()


def test_announced_length_over_the_limit_is_413_without_the_body(web: Web) -> None:
    raw = _get(b"Content-Length: %d" % (MAX_BODY + 1), line=b"POST /webhooks/signup HTTP/1.1")
    assert _status(web, raw) == 413


def _stalled(web: Web, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=BODY_TIMEOUT_SECONDS + 15)
    sock.sendall(head)
    return sock


def test_slow_clients_do_not_starve_health(web: Web) -> None:
    post = b"POST /webhooks/signup HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
    bodies = [_stalled(web, post + b"Content-Length: 100000\r\n\r\n{") for _ in range(4 * WORKERS)]
    chunked = [_stalled(web, post + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{") for _ in range(4)]
    heads = [_stalled(web, b"GET /healthz HTTP/1.1\r\nHost: re") for _ in range(4 * WORKERS)]
    try:
        for _ in range(5):
            started = time.monotonic()
            assert _status(web, HEALTH + b"\r\n") == 200
            assert time.monotonic() - started < 5  # liveness, not performance
        # A stalled body is answered 408 once its time is up, and its connection closed.
        for sock in [*bodies, *chunked]:
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in [*bodies, *chunked, *heads]:
            sock.close()
    assert not web.deaths()


def test_access_lines_are_json_without_query_or_crash(web: Web) -> None:
    marker = uuid.uuid4().hex
    assert (
        _status(web, _get(line=f"GET /healthz?email={marker}@example.org HTTP/1.1".encode())) == 200
    )
    wait_for(lambda: '"path": "/healthz"' in web.process.output(), 10, "an access line")
    assert marker not in web.process.output()
    lines = [json.loads(line) for line in web.process.output().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "gunicorn.access"]
    assert access and {"method", "path", "status", "duration_ms"} <= set(access[-1])
    assert not [line for line in lines if line.get("logger") == "uvicorn.access"]


def test_sync_worker_logs_gunicorn_error_answers_without_dying(tmp_path: Path) -> None:
    """The access logger under gunicorn's own workers too (`-k sync`): its error path hands
    `access` a Response without `status_code`, which used to kill the worker."""
    web = _start(tmp_path, "--worker-class", "sync")
    try:
        before = web.worker_pids()
        for raw in (
            _get(b"Content-Length: 0", b"Content-Length: 0"),
            _get(b"Transfer-Encoding: gzip"),
        ):
            assert _status(web, raw) == 400
        assert _status(web, HEALTH + b"\r\n") == 200
        assert web.worker_pids() == before and not web.deaths()
        assert '"status": 400' in web.process.output()
    finally:
        web.process.stop()
