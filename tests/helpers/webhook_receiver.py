"""A real HTTP receiver of the relay's operational notifications: it checks each signature
with the `standardwebhooks` package (`Webhook(secret).verify`), as a target would, answers 401
when it fails, and can be told to answer some statuses first (e.g. 503 twice) before 200."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import standardwebhooks


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str
    answers: list[int] = field(default_factory=list)  # answered in order, then 200
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                status = receiver.answer(headers, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        try:
            standardwebhooks.Webhook(self.secret).verify(body, headers)
            verified = True
        except standardwebhooks.WebhookVerificationError:
            verified = False
        with self._lock:
            status = (self.answers.pop(0) if self.answers else 200) if verified else 401
            self.received.append(Received(headers, body, verified, status))
        return status

    def accepted(self) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.verified and item.answered == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
