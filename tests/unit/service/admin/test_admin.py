"""`/admin/...` through the Flask test client: create_app with a real config, a SQLite ledger in
tmp_path and the embedded filesystem broker."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import DeadLetter, Outbox
from service import create_app
from service.intake.publisher import Publisher
from tests.helpers.ledger_rows import T0, dead_letter, record

TOKEN = "adm-" + "a1b2c3d4" * 5
ROTATED_TOKEN = "adm-" + "z9y8x7w6" * 5
WRONG_TOKEN = "adm-" + "00000000" * 5
PROBLEM = "application/problem+json"
JANE = "Jane.Doe@Example.com"


def config_text(data_dir: Path, tokens: list[str]) -> str:
    quoted = ", ".join(f'"{token}"' for token in tokens)
    return f"""
[service]
data_dir = "{data_dir}"

[admin]
tokens = [{quoted}]

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

[sources.crm]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
source = "crm_import"
"""


@dataclass
class RecordingPublisher:
    """Stands in for service.intake.publisher.Publisher; remembers what the outbox held at
    publish."""

    sessions: sessionmaker[Session]
    published: list[tuple[str, int]] = field(default_factory=list)
    pending_at_publish: list[int] = field(default_factory=list)

    def publish(self, destination: str, contact_id: int) -> bool:
        with self.sessions() as session:
            statuses = session.scalars(
                select(Outbox.status).where(
                    Outbox.destination == destination, Outbox.contact_id == contact_id
                )
            )
            self.pending_at_publish.append(sum(status == "pending" for status in statuses))
        self.published.append((destination, contact_id))
        return True


@dataclass
class Admin:
    settings: Settings
    app: Flask
    client: FlaskClient
    sessions: sessionmaker[Session]
    publisher: RecordingPublisher

    def get(self, path: str, token: str | None = TOKEN, **kwargs: Any) -> TestResponse:
        return self.client.get(path, headers=auth(token), **kwargs)

    def post(self, path: str, token: str | None = TOKEN, **kwargs: Any) -> TestResponse:
        return self.client.post(path, headers=auth(token) | kwargs.pop("headers", {}), **kwargs)


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def build_admin(tmp_path: Path, tokens: list[str]) -> Admin:
    path = tmp_path / "consent-relay.toml"
    path.write_text(config_text(tmp_path / "data", tokens))
    settings = load_settings(path, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    sessions = make_session_factory(make_engine(settings.database_url))
    publisher = RecordingPublisher(sessions)
    app.extensions["publisher"] = publisher
    return Admin(settings, app, app.test_client(), sessions, publisher)


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    admin = build_admin(tmp_path, [TOKEN, ROTATED_TOKEN])
    yield admin
    admin.app.extensions["consent_relay"].engine.dispose()


# Three refused attempts, the last one logged.
refused = partial(dead_letter, logged=1, attempt_detail="invalid attribute")


def seed(admin: Admin) -> dict[str, int]:
    """Dead letters as the worker writes them: jane (signup, engage), john (crm, engage),
    ann (signup, engage_eu), and an older superseded one for jane."""
    with admin.sessions() as session:
        jane = record(session, JANE, "granted", "signup")
        jane_old = refused(session, "engage", jane, T0 + dt.timedelta(hours=1))
        record(session, JANE, "denied", "signup", T0 + dt.timedelta(minutes=90))
        return {
            "jane_old": jane_old,
            "jane": refused(session, "engage", jane, T0 + dt.timedelta(hours=2)),
            "john": refused(
                session,
                "engage",
                record(session, "john@example.com", "denied", "crm"),
                T0 + dt.timedelta(hours=3),
            ),
            "ann": refused(
                session,
                "engage_eu",
                record(session, "ann@example.com", "withdrawn", "signup"),
                T0 + dt.timedelta(hours=4),
            ),
            "jane_contact": jane,
        }


def outbox_statuses(admin: Admin, destination: str, contact_id: int) -> list[str]:
    with admin.sessions() as session:
        return list(
            session.scalars(
                select(Outbox.status)
                .filter_by(destination=destination, contact_id=contact_id)
                .order_by(Outbox.id)
            )
        )


def dead_letter_row(admin: Admin, dead_id: int) -> DeadLetter:
    with admin.sessions() as session:
        row = session.get(DeadLetter, dead_id)
        assert row is not None
        return row


def assert_problem(response: TestResponse, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"] == f"urn:consent-relay:problem:{slug}"
    assert body["title"]
    return dict(body)


def listed(response: TestResponse) -> list[int]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return [item["id"] for item in response.get_json()["dead_letters"]]


# --- authentication -----------------------------------------------------------------------------

ROUTES = [
    ("GET", "/admin/dead-letters"),
    ("GET", "/admin/dead-letters/1"),
    ("POST", "/admin/dead-letters/1/replay"),
    ("POST", "/admin/dead-letters/replay"),
    ("GET", "/admin/destinations"),
    ("POST", "/admin/destinations/engage/pause"),
    ("POST", "/admin/destinations/engage/resume"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_a_token_every_route_answers_401(admin: Admin, method: str, path: str) -> None:
    response = admin.client.open(path, method=method)
    problem = assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in problem["detail"]


@pytest.mark.parametrize(
    "header", [f"Bearer {WRONG_TOKEN}", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer ", TOKEN]
)
def test_a_wrong_token_answers_401(admin: Admin, header: str) -> None:
    response = admin.client.get("/admin/destinations", headers={"Authorization": header})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_configured_token_is_accepted(admin: Admin) -> None:
    for token in (TOKEN, ROTATED_TOKEN):
        assert admin.get("/admin/destinations", token=token).status_code == 200
    response = admin.client.get("/admin/destinations", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_configured_tokens_the_api_is_disabled(
    tmp_path: Path, method: str, path: str
) -> None:
    disabled = build_admin(tmp_path, [])
    response = disabled.client.open(path, method=method, headers=auth(TOKEN))
    problem = assert_problem(response, 403, "admin-api-disabled")
    assert "[admin] tokens" in problem["detail"]
    disabled.app.extensions["consent_relay"].engine.dispose()


def test_tokens_and_addresses_stay_out_of_the_logs(
    admin: Admin, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    ids = seed(admin)
    caplog.set_level(logging.DEBUG)
    admin.get("/admin/dead-letters", token=WRONG_TOKEN)
    admin.get(f"/admin/dead-letters?email={JANE}")
    admin.get(f"/admin/dead-letters/{ids['jane']}")
    admin.post(f"/admin/dead-letters/{ids['jane']}/replay")
    admin.post("/admin/dead-letters/replay", json={"email": "JOHN@example.com"})
    admin.post("/admin/destinations/engage/pause", json={"reason": "maintenance"})
    broken_ledger(admin, tmp_path)
    assert admin.post("/admin/dead-letters/replay", json={"email": JANE}).status_code == 503

    assert "admin replay" in caplog.text  # the actions are logged ...
    assert "unknown token" in caplog.text
    for secret in (TOKEN, WRONG_TOKEN, ROTATED_TOKEN, TOKEN[4:20]):  # ... without secrets
        assert secret not in caplog.text
    for address in (JANE, JANE.lower(), "john@example.com", "JOHN@example.com"):
        assert address not in caplog.text


# --- dead letters -------------------------------------------------------------------------------


def test_list_defaults_to_open_newest_first(admin: Admin) -> None:
    ids = seed(admin)
    response = admin.get("/admin/dead-letters")

    assert listed(response) == [ids["ann"], ids["john"], ids["jane"]]
    body = response.get_json()
    assert (body["limit"], body["offset"]) == (100, 0)
    jane = body["dead_letters"][2]
    assert jane["email"] == JANE
    assert jane["decision"] == "denied"
    assert jane["source"] == "signup"
    assert jane["reason"] == "rejected"
    assert jane["last_status"] == 400
    assert jane["created_at"] == (T0 + dt.timedelta(hours=2)).isoformat()
    assert uuid.UUID(jane["event_id"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "all"}, ["ann", "john", "jane", "jane_old"]),
        ({"status": "superseded"}, ["jane_old"]),
        ({"source": "crm"}, ["john"]),
        ({"source": "signup", "destination": "engage"}, ["jane"]),
        ({"email": "  jane.DOE@example.com"}, ["jane"]),
        ({"email": "nobody@example.com"}, []),
        ({"since": "2026-07-01T12:00:00Z"}, ["ann", "john"]),
        ({"until": "2026-07-01T12:00:00+00:00"}, ["jane"]),
        ({"since": "2026-07-01T13:30:00+02:00", "until": "2026-07-01T12:30:00Z"}, ["john"]),
        ({"status": "all", "limit": "2", "offset": "1"}, ["john", "jane"]),
    ],
)
def test_list_filters(admin: Admin, query: dict[str, str], expected: list[str]) -> None:
    ids = seed(admin)
    response = admin.get("/admin/dead-letters", query_string=query)
    assert listed(response) == [ids[name] for name in expected]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=closed", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("since=yesterday", "since"),
        ("since=2026-07-01T09:00:00", "since"),  # no offset: ambiguous
        ("since=2026-07-02T00:00:00Z&until=2026-07-01T00:00:00Z", "until"),
        ("destinaton=engage", "destinaton"),
        ("status=open&status=all", "status"),
    ],
)
def test_bad_queries_answer_422_with_field_errors(admin: Admin, query: str, field: str) -> None:
    problem = assert_problem(admin.get(f"/admin/dead-letters?{query}"), 422, "validation-failed")
    assert list(problem["errors"]) == [field]
    assert all(isinstance(message, str) for message in problem["errors"][field])


def test_show_has_the_attempt_history(admin: Admin) -> None:
    ids = seed(admin)
    response = admin.get(f"/admin/dead-letters/{ids['jane']}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == ids["jane"]
    assert body["status"] == "open"
    history = body["history"]
    assert [entry["started_at"] for entry in history] == [
        (T0 + dt.timedelta(minutes=59)).isoformat(),  # jane_old's attempt, then jane's
        (T0 + dt.timedelta(minutes=119)).isoformat(),
    ]
    assert history[-1]["http_status"] == 400
    assert history[-1]["event_id"] == body["event_id"]


def test_show_of_an_unknown_id_answers_404(admin: Admin) -> None:
    assert_problem(admin.get("/admin/dead-letters/424242"), 404, "unknown-dead-letter")


def test_replay_one_then_again_is_a_no_op(admin: Admin) -> None:
    ids = seed(admin)
    jane = ids["jane_contact"]
    assert outbox_statuses(admin, "engage", jane) == ["dead_lettered", "dead_lettered"]

    first = admin.post(f"/admin/dead-letters/{ids['jane']}/replay")

    assert first.status_code == 200
    assert first.get_json() == {
        "replayed": [ids["jane"]],
        "skipped": {},
        "unknown": [],
        "enqueued": 1,
    }
    assert outbox_statuses(admin, "engage", jane) == ["pending", "pending"]
    assert admin.publisher.published == [("engage", jane)]
    assert admin.publisher.pending_at_publish == [2]  # enqueued after the commit
    row = dead_letter_row(admin, ids["jane"])
    assert (row.status, row.replay_count) == ("replayed", 1)
    assert row.resolved_at is not None

    second = admin.post(f"/admin/dead-letters/{ids['jane']}/replay")

    assert second.status_code == 200
    assert second.get_json()["replayed"] == []
    assert second.get_json()["skipped"] == {str(ids["jane"]): "already replayed"}
    assert second.get_json()["enqueued"] == 0
    assert admin.publisher.published == [("engage", jane)]
    assert dead_letter_row(admin, ids["jane"]).replay_count == 1


def test_replay_publishes_through_the_real_broker(admin: Admin) -> None:
    ids = seed(admin)
    admin.app.extensions["publisher"] = Publisher(admin.app.extensions["celery"])
    broker = admin.settings.data_dir / "broker"

    response = admin.post(f"/admin/dead-letters/{ids['john']}/replay")

    assert response.get_json()["enqueued"] == 1
    [message] = broker.glob("*.msg")
    assert "consent_relay.deliver_contact" in message.read_text()


def test_replay_of_a_superseded_dead_letter_is_skipped(admin: Admin) -> None:
    ids = seed(admin)
    response = admin.post(f"/admin/dead-letters/{ids['jane_old']}/replay")

    assert response.status_code == 200
    assert response.get_json()["skipped"] == {
        str(ids["jane_old"]): "superseded by a newer decision"
    }
    assert outbox_statuses(admin, "engage", ids["jane_contact"]) == ["dead_lettered"] * 2


def test_replay_of_an_unknown_id_answers_404(admin: Admin) -> None:
    assert_problem(admin.post("/admin/dead-letters/424242/replay"), 404, "unknown-dead-letter")


def test_bulk_replay_by_filters(admin: Admin) -> None:
    ids = seed(admin)
    response = admin.post(
        "/admin/dead-letters/replay", json={"source": "signup", "since": "2026-07-01T10:30:00Z"}
    )

    assert response.status_code == 200
    assert sorted(response.get_json()["replayed"]) == sorted([ids["jane"], ids["ann"]])
    assert response.get_json()["enqueued"] == 2
    assert listed(admin.get("/admin/dead-letters")) == [ids["john"]]


def test_bulk_replay_by_ids_reports_unknown_ones(admin: Admin) -> None:
    ids = seed(admin)
    response = admin.post("/admin/dead-letters/replay", json={"ids": [ids["john"], 424242]})

    assert response.status_code == 200
    assert response.get_json()["replayed"] == [ids["john"]]
    assert response.get_json()["unknown"] == [424242]


def test_bulk_replay_all(admin: Admin) -> None:
    ids = seed(admin)
    response = admin.post("/admin/dead-letters/replay", json={"all": True})

    assert sorted(response.get_json()["replayed"]) == sorted([ids["jane"], ids["john"], ids["ann"]])
    assert listed(admin.get("/admin/dead-letters")) == []
    again = admin.post("/admin/dead-letters/replay", json={"all": True})
    assert again.get_json() == {"replayed": [], "skipped": {}, "unknown": [], "enqueued": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "_schema"),
        ({"all": False}, "_schema"),
        ({"all": True, "destination": "engage"}, "_schema"),
        ({"ids": [1], "all": True}, "_schema"),
        ({"all": "true"}, "all"),
        ({"ids": []}, "ids"),
        ({"ids": ["1"]}, "ids"),
        ({"since": "not a time"}, "since"),
        ({"status": "all"}, "status"),
        ([1, 2], "_schema"),
    ],
)
def test_bulk_replay_refuses_unclear_bodies(admin: Admin, body: Any, field: str) -> None:
    ids = seed(admin)
    problem = assert_problem(
        admin.post("/admin/dead-letters/replay", json=body), 422, "validation-failed"
    )
    assert field in problem["errors"]
    assert dead_letter_row(admin, ids["jane"]).status == "open"
    assert admin.publisher.published == []


def test_bulk_replay_with_an_empty_body_answers_422(admin: Admin) -> None:
    problem = assert_problem(admin.post("/admin/dead-letters/replay"), 422, "validation-failed")
    assert "all" in problem["errors"]["_schema"][0]


def test_bulk_replay_refuses_malformed_and_non_json_bodies(admin: Admin) -> None:
    json_type = {"Content-Type": "application/json"}
    bad = admin.post("/admin/dead-letters/replay", data=b'{"all": tru', headers=json_type)
    assert_problem(bad, 400, "malformed-json")
    form = admin.post("/admin/dead-letters/replay", data={"all": "true"})
    assert_problem(form, 415, "unsupported-media-type")


def test_ledger_errors_answer_503_with_retry_after(admin: Admin, tmp_path: Path) -> None:
    broken_ledger(admin, tmp_path)
    response = admin.get("/admin/dead-letters")
    assert_problem(response, 503, "ledger-unavailable")
    assert response.headers["Retry-After"] == "30"


def broken_ledger(admin: Admin, tmp_path: Path) -> None:
    """Point the app at a ledger path that is a directory: SQLite cannot open it."""
    (tmp_path / "not-a-database").mkdir()
    runtime = admin.app.extensions["consent_relay"]
    runtime.sessions = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'not-a-database'}"))


# --- destinations -------------------------------------------------------------------------------


def destination(admin: Admin, name: str) -> dict[str, Any]:
    response = admin.get("/admin/destinations")
    assert response.status_code == 200
    by_name = {item["name"]: item for item in response.get_json()["destinations"]}
    assert set(by_name) == {"engage", "engage_eu"}
    return dict(by_name[name])


def test_pause_and_resume_round_trip(admin: Admin) -> None:
    assert destination(admin, "engage")["paused"] is False

    paused = admin.post("/admin/destinations/engage/pause", json={"reason": "Engage maintenance"})

    assert paused.status_code == 200
    assert paused.get_json()["paused"] is True
    engage = destination(admin, "engage")
    assert (engage["paused"], engage["paused_by"]) == (True, "operator")
    assert engage["paused_reason"] == "Engage maintenance"
    assert engage["next_probe_at"] is None
    assert destination(admin, "engage_eu")["paused"] is False

    resumed = admin.post("/admin/destinations/engage/resume")

    assert resumed.status_code == 200
    assert resumed.get_json()["was_paused"] is True
    engage = destination(admin, "engage")
    assert (engage["paused"], engage["resumed_by"]) == (False, "operator")
    assert engage["resumed_at"] is not None
    again = admin.post("/admin/destinations/engage/resume")
    assert again.get_json()["was_paused"] is False
    assert admin.publisher.published == []  # the sweeper picks pending work up


def test_pause_without_a_body_has_a_default_reason(admin: Admin) -> None:
    assert admin.post("/admin/destinations/engage_eu/pause").status_code == 200
    assert destination(admin, "engage_eu")["paused_reason"] == "paused by an operator"


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_unknown_destination_answers_404(admin: Admin, action: str) -> None:
    response = admin.post(f"/admin/destinations/nowhere/{action}")
    assert_problem(response, 404, "unknown-destination")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"reason": ""}, "reason"), ({"reason": 7}, "reason"), ({"why": "x"}, "why")],
)
def test_bad_pause_bodies_answer_422(admin: Admin, body: dict[str, Any], field: str) -> None:
    response = admin.post("/admin/destinations/engage/pause", json=body)
    assert list(assert_problem(response, 422, "validation-failed")["errors"]) == [field]
    assert destination(admin, "engage")["paused"] is False
