"""Serving an emulator app over real HTTP: a threaded werkzeug server on a background thread
(tests, the demo) or in the calling thread (the CLIs). Shared by every vendor emulator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["EmulatorServer"]

POLL_INTERVAL_SECONDS = 0.05  # how fast stop() takes effect


def _redact_path(raw_path: str) -> str:
    """Path without query string or e-mail segments, safe to log."""
    path = raw_path.split("?", 1)[0]
    if path.startswith("/_emulator/contacts/"):
        return "/_emulator/contacts/<redacted>"
    return path


class _RedactingRequestHandler(WSGIRequestHandler):
    """Access log with method, path and status only: never the query (it holds e-mails).
    Logged under the app's import name (e.g. `emulators.engage`)."""

    def _logger(self) -> logging.Logger:
        return logging.getLogger(getattr(self.server, "app").import_name)  # noqa: B009

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = getattr(code, "value", code)
        self._logger().info("%s %s %s", self.command, _redact_path(self.path), status)

    def log_error(self, format: str, *args: Any) -> None:
        self._logger().warning("error while serving %s", _redact_path(getattr(self, "path", "")))


class EmulatorServer:
    """Serves a WSGI app on a real socket. `app.extensions["emulator_on_stop"]`, when set, is
    called first on stop (the Engage emulator ends hung requests there)."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = make_server(
            host, port, app, threaded=True, request_handler=_RedactingRequestHandler
        )
        self._on_stop: Callable[[], None] | None = app.extensions.get("emulator_on_stop")
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self._server.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> EmulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": POLL_INTERVAL_SECONDS},
                name="emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (used by the CLI) until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
