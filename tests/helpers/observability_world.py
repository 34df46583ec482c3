"""The web app over a migrated SQLite ledger, for the log and metrics tests: signed posts
through the Flask test client, the delivery task run in-process against the Engage emulator,
and the JSON lines that the real formatter makes of the captured log records."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.ledger.migrate import upgrade
from relay.telemetry.logs import json_formatter
from schemas.config import decode_whsec
from service import create_app
from service.runtime import Runtime
from service.sources.standard_webhooks import sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
METRICS_TOKEN = "metrics-token-for-the-unit-tests-0123456789"
ENGAGE_PASSWORD = "engage-demo-password"
EMAIL = "Jane.Doe+Obs@Example.com"


def config_text(data_dir: Path, engage_url: str, metrics_token: str | None) -> str:
    metrics = f'[metrics]\ntoken = "{metrics_token}"\n' if metrics_token else ""
    return f"""
[service]
data_dir = "{data_dir}"
max_body_bytes = 2048

[destinations.engage]
kind = "mapp-engage"
base_url = "{engage_url}"
username = "api-user@example.com"
password = "{ENGAGE_PASSWORD}"
connect_timeout_seconds = 2
read_timeout_seconds = 5

[sources.signup]
kind = "standard-webhooks"
secrets = ["{SECRET}"]
source = "registration_form"

{metrics}"""


@dataclass
class Relay:
    settings: Settings
    app: Flask
    client: FlaskClient

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.extensions["consent_relay"]
        return runtime

    def post(
        self,
        body: bytes,
        *,
        source: str = "signup",
        msg_id: str | None = None,
        secret: str = SECRET,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        now = int(dt.datetime.now(dt.UTC).timestamp())
        signed = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign(decode_whsec(secret), msg_id, now, body),
            "content-type": content_type,
            **(headers or {}),
        }
        response = self.client.post(f"/webhooks/{source}", data=body, headers=signed)
        # Its deliveries are published from a background thread: done before anyone looks.
        assert self.app.extensions["background_publisher"].flush()
        return response

    def scrape(self, token: str | None = METRICS_TOKEN) -> TestResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get("/metrics", headers=headers)

    def close(self) -> None:
        self.runtime.engine.dispose()


def build_relay(
    tmp_path: Path, engage_url: str, metrics_token: str | None = METRICS_TOKEN
) -> Relay:
    path = tmp_path / "consent-relay.toml"
    path.write_text(config_text(tmp_path / "data", engage_url, metrics_token))
    settings = load_settings(path, environ={})
    app = create_app({"SETTINGS": settings, "TESTING": True})
    upgrade(app.extensions["consent_relay"].engine)
    return Relay(settings, app, app.test_client())


def payload(email: str = EMAIL, consent: str = "granted", **fields: Any) -> bytes:
    return json.dumps({"email": email, "tracking_consent": consent, **fields}).encode()


class JsonCapture:
    """A handler with the stderr handler's formatter, on the root logger: the lines that
    stderr would get (context is merged when a line is emitted, as there)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(json_formatter())

    def __enter__(self) -> JsonCapture:
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._level)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()
