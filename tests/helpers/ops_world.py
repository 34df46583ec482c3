"""The operator page's test world: create_app with a real config (an admin password, two
Engage destinations, one source), a migrated SQLite ledger in tmp_path, a recording publisher,
and a Flask test client that signs in. The `ops` fixture is in tests/unit/service/ops/conftest.py.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from service import create_app

PASSWORD = "correct-horse-battery-staple"


def config_text(data_dir: Path, password: str | None) -> str:
    admin = f'[admin]\nusername = "operator"\npassword = "{password}"\n' if password else ""
    return f"""
[service]
data_dir = "{data_dir}"

{admin}
[destinations.engage]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8025"
username = "api-user@example.com"
password = "engage-demo-password"

[destinations.engage_eu]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8026"
username = "api-user@example.com"
password = "engage-demo-password"

[sources.signup]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
source = "registration_form"
"""


@dataclass
class RecordingPublisher:
    published: list[tuple[str, int]] = field(default_factory=list)
    erasures: list[tuple[int, str]] = field(default_factory=list)

    def publish(self, destination: str, contact_id: int) -> bool:
        self.published.append((destination, contact_id))
        return True

    def publish_erasures(self, forwarded: Sequence[tuple[int, str]]) -> int:
        self.erasures.extend(forwarded)
        return len(forwarded)


@dataclass
class Ops:
    settings: Settings
    app: Flask
    client: FlaskClient
    sessions: sessionmaker[Session]
    publisher: RecordingPublisher

    def login(self, password: str = PASSWORD, username: str = "operator") -> TestResponse:
        self.client.get("/ops/login")
        data = {"username": username, "password": password, "csrf_token": self.csrf()}
        return self.client.post("/ops/login", data=data)

    def csrf(self) -> str:
        with self.client.session_transaction("/ops") as session:
            return str(session["ops_csrf"])

    def post(self, path: str, **data: str) -> TestResponse:
        return self.client.post(path, data={"csrf_token": self.csrf(), **data})

    def page(self, path: str) -> str:
        response = self.client.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/html"
        return html.unescape(response.get_data(as_text=True))

    def follow(self, response: TestResponse) -> str:
        assert response.status_code == 303, response.get_data(as_text=True)
        return self.page(response.headers["Location"])


def build_ops(tmp_path: Path, password: str | None = PASSWORD) -> Ops:
    path = tmp_path / "consent-relay.toml"
    path.write_text(config_text(tmp_path / "data", password))
    settings = load_settings(path, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    publisher = RecordingPublisher()
    app.extensions["publisher"] = publisher
    sessions = make_session_factory(make_engine(settings.database_url))
    return Ops(settings, app, app.test_client(), sessions, publisher)
