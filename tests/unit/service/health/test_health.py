"""`GET /healthz` and `GET /readyz` through the Flask test client, with a SQLite ledger and the
embedded broker (or an unreachable Redis broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from relay.config.loader import load_settings
from relay.ledger import pauses as destinations
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import utcnow
from service import create_app

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def client(tmp_path: Path, *, migrate: bool = True, broker: str | None = None) -> FlaskClient:
    broker_line = f'broker_url = "{broker}"' if broker else ""
    path = tmp_path / "consent-relay.toml"
    path.write_text(
        f"""
[service]
data_dir = "{tmp_path / "data"}"
{broker_line}

[destinations.engage]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8025"
username = "api-user@example.com"
password = "engage-demo-password"

[sources.signup]
kind = "standard-webhooks"
secrets = ["{SECRET}"]
source = "registration_form"
"""
    )
    settings = load_settings(path, environ={})
    if migrate:
        upgrade(make_engine(settings.database_url))
    return create_app({"SETTINGS": settings, "TESTING": True}).test_client()


def readyz(web: FlaskClient) -> tuple[int, dict[str, Any]]:
    response = web.get("/readyz")
    body: dict[str, Any] = response.get_json()
    return response.status_code, body


def test_healthz_answers_while_the_process_is_up(tmp_path: Path) -> None:
    response = client(tmp_path, migrate=False).get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_ready_when_ledger_broker_and_destinations_are_fine(tmp_path: Path) -> None:
    status, body = readyz(client(tmp_path))
    assert status == 200
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "destinations": {"engage": "active"}},
    }


def test_not_ready_while_a_destination_is_paused(tmp_path: Path) -> None:
    web = client(tmp_path)
    sessions = make_session_factory(web.application.extensions["consent_relay"].engine)
    with sessions() as session:
        destinations.pause(
            session, "engage", by="auth", reason="403", status=403, now=utcnow(), probe_in=None
        )
        session.commit()

    status, body = readyz(web)
    assert (status, body["status"]) == (503, "not_ready")
    assert body["checks"]["destinations"] == {"engage": "paused"}

    with sessions() as session:
        destinations.resume(session, "engage", by="operator", now=utcnow())
        session.commit()
    assert readyz(web)[0] == 200


def test_not_ready_on_an_unmigrated_ledger(tmp_path: Path) -> None:
    status, body = readyz(client(tmp_path, migrate=False))
    assert status == 503
    assert body["checks"]["database"] == "schema_outdated"
    assert body["checks"]["destinations"] == {}


def test_not_ready_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    status, body = readyz(client(tmp_path, broker="redis://127.0.0.1:1/0"))
    assert status == 503
    assert body["checks"]["broker"] == "unreachable"
    assert body["checks"]["database"] == "ok"
