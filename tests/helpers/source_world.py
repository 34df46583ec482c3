"""A relay with one configured source of any kind, driven through the Flask test client.

`SourceWorld.send` signs a body as the sender would (the kind's own `sign`, the same code as
`consent-relay sources send`); `post` sends exactly what a test gives, for forged requests.
The ledger is SQLite in tmp_path; the broker is the embedded filesystem transport.

Also the small helpers every source-kind test file needs: `config_error` (the message a bad
`[sources.<name>]` table raises), `fixture_json` (a kind's JSON fixture as a dict) and
`basic_auth` (JSON headers with a Basic authorization).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.test import TestResponse

from relay.config.loader import ConfigError, load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import Event, IgnoredEvent
from service import create_app
from service.sources import SourceKind
from service.sources.fixtures import load_fixture

BASE_URL = "http://relay.example.com"


def world_config(data_dir: Path, name: str, source_toml: str) -> str:
    return f"""
[service]
data_dir = "{data_dir}"

[destinations.engage]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8025"
username = "api-user@example.com"
password = "engage-demo-password"

[sources.{name}]
{source_toml}
"""


def config_error(tmp_path: Path, source_toml: str, name: str = "src") -> str:
    """The ConfigError message for a config whose `[sources.<name>]` table is source_toml."""
    path = tmp_path / "consent-relay.toml"
    path.write_text(world_config(tmp_path / "data", name, source_toml))
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    return str(raised.value)


def fixture_json(kind: str, event: str) -> dict[str, Any]:
    body, _ = load_fixture(kind, event)
    payload: dict[str, Any] = json.loads(body)
    return payload


def basic_auth(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": f"Basic {pair}"}


class SourceWorld:
    def __init__(self, tmp_path: Path, source_toml: str, name: str = "src"):
        self.name = name
        path = self.config_path = tmp_path / "consent-relay.toml"
        path.write_text(world_config(tmp_path / "data", name, source_toml))
        self.settings: Settings = load_settings(path, environ={})
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(make_engine(self.settings.database_url))
        self.app: Flask = create_app({"SETTINGS": self.settings, "TESTING": True})
        self.client = self.app.test_client()

    @property
    def kind(self) -> SourceKind:
        kind: SourceKind = self.app.extensions["consent_relay"].kinds[self.name]
        return kind

    @property
    def url(self) -> str:
        return f"{BASE_URL}/webhooks/{self.name}"

    def send(
        self, body: bytes, content_type: str = "application/json", now: float | None = None
    ) -> TestResponse:
        """Signed (or authorised) by the kind itself, as the real sender would."""
        signed = self.kind.sign(body, content_type, self.url, time.time() if now is None else now)
        return self.post(signed.url, signed.body, dict(signed.headers))

    def send_json(self, payload: Any) -> TestResponse:
        return self.send(json.dumps(payload).encode())

    def send_fixture(self, kind: str, event: str, now: float | None = None) -> TestResponse:
        body, content_type = load_fixture(kind, event)
        return self.send(body, content_type, now)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> TestResponse:
        parts = urlsplit(url if "://" in url else BASE_URL + url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.client.post(path, data=body, headers=headers, base_url=BASE_URL)

    def events(self) -> list[dict[str, Any]]:
        with self.app.extensions["consent_relay"].sessions() as session:
            rows = session.scalars(select(Event).order_by(Event.id)).all()
            return [_row(row) for row in rows]

    def ignored(self) -> list[dict[str, Any]]:
        with self.app.extensions["consent_relay"].sessions() as session:
            rows = session.scalars(select(IgnoredEvent).order_by(IgnoredEvent.id)).all()
            return [_row(row) for row in rows]


def _row(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}
