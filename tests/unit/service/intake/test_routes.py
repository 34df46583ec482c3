"""`POST /webhooks/<source>` through the Flask test client, with a SQLite ledger in tmp_path
and the embedded filesystem broker."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import Contact, DeliveryState, Event, Outbox
from schemas.config import decode_whsec
from service import create_app
from service.sources.standard_webhooks import sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + base64.b64encode(b"second-secret-used-for-rotation").decode()
UNKNOWN_SECRET = "whsec_" + base64.b64encode(b"a-secret-nobody-configured!!").decode()
EMAIL = "Jane.Doe+News@Example.com"
MAX_BODY = 2048
DESTINATIONS = ("engage", "engage_eu")
PROBLEM = "application/problem+json"


def now_ts() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp())


def config_text(data_dir: Path) -> str:
    return f"""
[service]
data_dir = "{data_dir}"
max_body_bytes = {MAX_BODY}

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
secrets = ["{SECRET}", "{OTHER_SECRET}"]
source = "registration_form"

[sources.lenient]
kind = "standard-webhooks"
secrets = ["{SECRET}"]
source = "crm_import"
timestamp_tolerance_seconds = 172800
"""


def build_settings(tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "consent-relay.toml"
    path.write_text(config_text(tmp_path / "data"))
    return load_settings(path, environ=environ or {})


@dataclass
class Intake:
    settings: Settings
    app: Flask
    client: FlaskClient
    sessions: sessionmaker[Session]

    def count(self, model: Any) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def all(self, model: Any) -> list[Any]:
        with self.sessions() as session:
            return list(session.scalars(select(model)))

    def broker_messages(self) -> list[Path]:
        # The intake publishes from a background thread (service/intake/publisher.py).
        assert self.app.extensions["background_publisher"].flush()
        return sorted((self.settings.data_dir / "broker").glob("*.msg"))

    def published(self) -> list[tuple[str, int]]:
        """(destination, contact id) of every delivery on the broker: a delivery task's own,
        or each entry of a dispatch message."""
        found: list[tuple[str, int]] = []
        for path in self.broker_messages():
            message = json.loads(path.read_text())
            args = json.loads(base64.b64decode(message["body"]))[0]
            if message["headers"]["task"] == "consent_relay.dispatch":
                found += [(entry[0], entry[1]) for entry in args[0]]
            else:
                found.append((args[0], args[1]))
        return sorted(found)


DISPATCH = "consent_relay.dispatch"


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    settings = build_settings(tmp_path)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    app = create_app({"SETTINGS": settings, "TESTING": True})
    try:
        yield Intake(settings, app, app.test_client(), make_session_factory(engine))
    finally:
        engine.dispose()
        app.extensions["consent_relay"].engine.dispose()


def payload(**fields: Any) -> bytes:
    body = {"email": EMAIL, "tracking_consent": "granted", **fields}
    return json.dumps(body).encode()


def headers_for(
    body: bytes,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    secret: str = SECRET,
    use_package: bool = False,
    content_type: str | None = "application/json",
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = now_ts() if timestamp is None else timestamp
    if use_package:  # the independent signer (needs a UTF-8 body)
        when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
        signature = standardwebhooks.Webhook(secret).sign(msg_id, when, body.decode())
    else:
        signature = sign(decode_whsec(secret), msg_id, timestamp, body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def post(
    intake: Intake, body: bytes, source: str = "signup", headers: dict[str, str] | None = None
) -> TestResponse:
    return intake.client.post(
        f"/webhooks/{source}",
        data=body,
        headers=headers if headers is not None else headers_for(body),
    )


def assert_problem(response: TestResponse, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    problem = response.get_json(force=True)
    assert isinstance(problem, dict)
    assert problem["status"] == status
    assert problem["title"]
    assert problem["type"].startswith("urn:consent-relay:problem:")
    if slug is not None:
        assert problem["type"] == f"urn:consent-relay:problem:{slug}"
    return problem


def assert_nothing_written(intake: Intake) -> None:
    assert intake.count(Event) == 0
    assert intake.count(Contact) == 0
    assert intake.count(Outbox) == 0
    assert intake.broker_messages() == []


# --- 202 accepted -------------------------------------------------------------------------------


def test_accepted_decision_is_recorded(intake: Intake) -> None:
    body = payload()
    headers = headers_for(body, msg_id="msg_accept_1", use_package=True)
    before = dt.datetime.now(dt.UTC)
    response = post(intake, body, headers=headers)
    after = dt.datetime.now(dt.UTC)

    assert response.status_code == 202
    assert response.mimetype == "application/json"
    event_id = response.get_json()["event_id"]
    one = {"id": "msg_accept_1", "status": "accepted", "event_id": event_id}
    assert response.get_json() == {"status": "accepted", "event_id": event_id, "events": [one]}
    assert str(uuid.UUID(event_id)) == event_id

    [event] = intake.all(Event)
    [contact] = intake.all(Contact)
    assert event.public_id == event_id
    assert contact.email_key == "jane.doe+news@example.com"
    assert event.contact_id == contact.id
    assert event.email == EMAIL  # stored as sent
    assert event.decision == "granted"
    assert event.consent_source == "registration_form"  # the configured default
    assert event.consent_source_id is None
    assert event.source_name == "signup"
    assert event.delivery_id == "msg_accept_1"
    assert event.webhook_timestamp == int(headers["webhook-timestamp"])
    assert event.body_sha256 == hashlib.sha256(body).hexdigest()
    # No occurred_at in the payload: the receipt time stands in (never the webhook timestamp).
    assert event.occurred_at_given is False
    assert event.occurred_at == event.received_at
    assert before <= event.received_at <= after

    outbox = intake.all(Outbox)
    assert sorted(row.destination for row in outbox) == sorted(DESTINATIONS)
    assert {(row.event_id, row.contact_id, row.status) for row in outbox} == {
        (event.id, contact.id, "pending")
    }
    assert intake.count(DeliveryState) == 0


def test_occurred_at_and_labels_from_the_payload_are_kept(intake: Intake) -> None:
    occurred = dt.datetime(2024, 3, 1, 9, 15, 30, 250000, tzinfo=dt.UTC)
    body = payload(
        tracking_consent="withdrawn",
        source="preference_center",
        source_id="pc-42",
        occurred_at="2024-03-01T10:15:30.25+01:00",
    )
    response = post(intake, body)
    assert response.status_code == 202
    [event] = intake.all(Event)
    assert event.occurred_at == occurred
    assert event.occurred_at_given is True
    assert event.received_at > occurred
    assert (event.decision, event.consent_source, event.consent_source_id) == (
        "withdrawn",
        "preference_center",
        "pc-42",
    )


def test_either_rotated_secret_is_accepted(intake: Intake) -> None:
    first = payload(tracking_consent="granted")
    second = payload(tracking_consent="denied")
    assert post(intake, first, headers=headers_for(first, secret=SECRET)).status_code == 202
    assert (
        post(intake, second, headers=headers_for(second, secret=OTHER_SECRET, use_package=True))
    ).status_code == 202
    assert intake.count(Event) == 2


def test_same_person_in_another_case_is_the_same_contact(intake: Intake) -> None:
    assert post(intake, payload()).status_code == 202
    assert post(intake, payload(email=EMAIL.upper(), tracking_consent="denied")).status_code == 202
    assert intake.count(Contact) == 1
    assert sorted(event.email for event in intake.all(Event)) == sorted([EMAIL, EMAIL.upper()])
    assert intake.count(Outbox) == 2 * len(DESTINATIONS)


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/vnd.consent+json", "APPLICATION/JSON"],
)
def test_json_content_type_variants_are_accepted(intake: Intake, content_type: str) -> None:
    body = payload()
    assert (
        post(intake, body, headers=headers_for(body, content_type=content_type)).status_code == 202
    )


def test_body_exactly_at_the_size_limit_is_accepted(intake: Intake) -> None:
    body = payload()
    body = body + b" " * (MAX_BODY - len(body))
    assert len(body) == MAX_BODY
    assert post(intake, body).status_code == 202


# --- 200 duplicate ------------------------------------------------------------------------------


def test_duplicate_delivery_answers_200_with_the_same_event(intake: Intake) -> None:
    body = payload()
    headers = headers_for(body, msg_id="msg_dup")
    first = post(intake, body, headers=headers)
    second = post(intake, body, headers=headers)

    assert first.status_code == 202
    assert second.status_code == 200
    same = {"status": "duplicate", "event_id": first.get_json()["event_id"], "duplicate": True}
    assert second.get_json() == {**same, "events": [{"id": "msg_dup", **same}]}
    assert intake.count(Event) == 1
    assert intake.count(Outbox) == len(DESTINATIONS)
    assert len(intake.published()) == len(DESTINATIONS)  # nothing re-published


def test_duplicate_with_a_fresh_timestamp_much_later(intake: Intake) -> None:
    body = payload()
    day_ago = now_ts() - 86_400
    first = post(intake, body, "lenient", headers_for(body, msg_id="msg_late", timestamp=day_ago))
    # The sender retries a day later: new timestamp, new signature, same webhook-id.
    retry_headers = headers_for(body, msg_id="msg_late", use_package=True)
    assert (
        retry_headers["webhook-signature"]
        != headers_for(body, msg_id="msg_late", timestamp=day_ago)["webhook-signature"]
    )
    second = post(intake, body, "lenient", retry_headers)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.get_json()["event_id"] == first.get_json()["event_id"]
    assert second.get_json()["duplicate"] is True
    assert intake.count(Event) == 1
    [event] = intake.all(Event)
    assert event.webhook_timestamp == day_ago  # the first delivery's evidence is kept


def test_same_webhook_id_on_another_source_is_not_a_duplicate(intake: Intake) -> None:
    body = payload()
    assert post(intake, body, "signup", headers_for(body, msg_id="msg_shared")).status_code == 202
    assert post(intake, body, "lenient", headers_for(body, msg_id="msg_shared")).status_code == 202
    assert intake.count(Event) == 2


# --- 400 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b'{"email": "jane@example.com", "tracking_consent": "granted"',
        b'{"email": NaN, "tracking_consent": "granted"}',
        b'{"email": "jane@example.com", "tracking_consent": Infinity}',
        b"[" * 1000 + b"]" * 1000,
    ],
    ids=["garbage", "empty", "truncated", "nan", "infinity", "deep"],
)
def test_malformed_json(intake: Intake, body: bytes) -> None:
    problem = assert_problem(post(intake, body), 400, "malformed-json")
    assert "JSON" in problem["detail"]
    assert_nothing_written(intake)


def test_non_utf8_body(intake: Intake) -> None:
    body = b'{"email": "j\xe9@example.com", "tracking_consent": "granted"}'  # Latin-1
    problem = assert_problem(post(intake, body), 400, "malformed-json")
    assert "UTF-8" in problem["detail"]
    assert_nothing_written(intake)


# --- 401 ---------------------------------------------------------------------------------------


def _wrong_secret(body: bytes) -> dict[str, str]:
    return headers_for(body, secret=UNKNOWN_SECRET)


def _without(name: str) -> Callable[[bytes], dict[str, str]]:
    def build(body: bytes) -> dict[str, str]:
        headers = headers_for(body)
        del headers[name]
        return headers

    return build


def _with(name: str, value: str) -> Callable[[bytes], dict[str, str]]:
    def build(body: bytes) -> dict[str, str]:
        return {**headers_for(body), name: value}

    return build


def _stale(body: bytes) -> dict[str, str]:
    return headers_for(body, timestamp=now_ts() - 301)


def _future(body: bytes) -> dict[str, str]:
    return headers_for(body, timestamp=now_ts() + 301)


def _tampered(body: bytes) -> dict[str, str]:
    return headers_for(body.replace(b"granted", b"denied!"))


def _signature_for_another_id(body: bytes) -> dict[str, str]:
    return {**headers_for(body, msg_id="msg_other"), "webhook-id": "msg_this"}


@pytest.mark.parametrize(
    "make_headers",
    [
        _wrong_secret,
        _without("webhook-id"),
        _without("webhook-timestamp"),
        _without("webhook-signature"),
        _with("webhook-timestamp", "abc"),
        _with("webhook-timestamp", "123.5"),
        _with("webhook-timestamp", "-5"),
        _with("webhook-signature", "v1,!!!notbase64"),
        _with("webhook-signature", "v1a,xxx"),
        _with("webhook-signature", "x" * 5000),
        _with("webhook-id", "x" * 256),
        _stale,
        _future,
        _tampered,
        _signature_for_another_id,
    ],
    ids=[
        "wrong-secret",
        "no-id",
        "no-timestamp",
        "no-signature",
        "timestamp-abc",
        "timestamp-float",
        "timestamp-negative",
        "signature-not-base64",
        "signature-v1a",
        "signature-huge",
        "id-too-long",
        "stale",
        "future",
        "tampered-body",
        "signed-for-another-id",
    ],
)
def test_signature_failures_answer_401_and_write_nothing(
    intake: Intake, make_headers: Callable[[bytes], dict[str, str]]
) -> None:
    body = payload()
    problem = assert_problem(
        post(intake, body, headers=make_headers(body)), 401, "invalid-signature"
    )
    assert problem["detail"]
    assert_nothing_written(intake)


def test_signature_is_checked_before_the_body_is_parsed(intake: Intake) -> None:
    assert_problem(post(intake, b"{not json", headers=_wrong_secret(b"{not json")), 401)
    assert_problem(post(intake, b"[]", headers=_with("Content-Type", "text/plain")(b"x")), 401)


# --- 404, 405, 413, 415 --------------------------------------------------------------------------


def test_unknown_source(intake: Intake) -> None:
    body = payload()
    problem = assert_problem(post(intake, body, source="nosuch"), 404, "unknown-source")
    assert "nosuch" in problem["detail"]
    assert_nothing_written(intake)


def test_body_over_the_limit_answers_413(intake: Intake) -> None:
    body = payload(source="x" * MAX_BODY)
    assert len(body) > MAX_BODY
    assert_problem(post(intake, body), 413)
    assert_nothing_written(intake)


def test_body_one_byte_over_the_limit_answers_413(intake: Intake) -> None:
    body = payload()
    body = body + b" " * (MAX_BODY + 1 - len(body))
    assert_problem(post(intake, body), 413)
    assert_nothing_written(intake)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_non_json_content_type_with_a_valid_signature_answers_415(
    intake: Intake, content_type: str | None
) -> None:
    body = payload()
    headers = headers_for(body, content_type=content_type)
    assert_problem(post(intake, body, headers=headers), 415, "unsupported-media-type")
    assert_nothing_written(intake)


def test_unknown_route_is_a_404_problem(intake: Intake) -> None:
    assert_problem(intake.client.get("/no/such/route"), 404)
    assert_problem(intake.client.post("/webhooks"), 404)


def test_get_on_the_webhook_route_is_a_405_problem(intake: Intake) -> None:
    response = intake.client.get("/webhooks/signup")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_healthz(intake: Intake) -> None:
    response = intake.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


# --- 422 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (payload(email="not-an-address"), {"email": ["Not a valid email address."]}),
        (
            payload(tracking_consent="maybe"),
            {"tracking_consent": ["Must be one of: granted, denied, withdrawn, unknown."]},
        ),
        (payload(extra="x"), {"extra": ["Unknown field."]}),
        (
            payload(occurred_at="2024-01-01T00:00:00"),
            {"occurred_at": ["Not a valid aware datetime."]},
        ),
        (
            payload(occurred_at="2999-01-01T00:00:00Z"),
            {"occurred_at": ["Must not be in the future."]},
        ),
        (
            json.dumps({}).encode(),
            {
                "email": ["Missing data for required field."],
                "tracking_consent": ["Missing data for required field."],
            },
        ),
        (b"[]", {"_schema": ["Invalid input type."]}),
        (b'"jane@example.com"', {"_schema": ["Invalid input type."]}),
    ],
    ids=["email", "consent", "unknown", "naive", "future", "empty", "list", "string"],
)
def test_field_errors_answer_422(intake: Intake, body: bytes, errors: dict[str, Any]) -> None:
    problem = assert_problem(post(intake, body), 422, "validation-failed")
    assert problem["errors"] == errors
    assert_nothing_written(intake)


def test_future_skew_follows_the_service_setting(intake: Intake) -> None:
    within = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=240)
    beyond = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=360)
    assert post(intake, payload(occurred_at=within.isoformat())).status_code == 202
    assert_problem(post(intake, payload(occurred_at=beyond.isoformat())), 422)


# --- 503 ---------------------------------------------------------------------------------------


def test_unreachable_ledger_answers_503_with_retry_after(tmp_path: Path) -> None:
    settings = build_settings(
        tmp_path, {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nope"}
    )
    app = create_app({"SETTINGS": settings, "TESTING": True})
    body = payload()
    response = app.test_client().post("/webhooks/signup", data=body, headers=headers_for(body))
    problem = assert_problem(response, 503, "ledger-unavailable")
    assert response.headers["Retry-After"] == "30"
    assert "retry" in problem["detail"].lower()
    assert not list((settings.data_dir / "broker").glob("*.msg"))


def test_missing_events_table_answers_503(intake: Intake) -> None:
    database = intake.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA foreign_keys=OFF")
        connection.execute("DROP TABLE events")
    response = post(intake, payload())
    assert_problem(response, 503, "ledger-unavailable")
    assert response.headers["Retry-After"] == "30"
    assert intake.broker_messages() == []


def _fail_event_inserts(intake: Intake) -> None:
    database = intake.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TRIGGER fail_insert BEFORE INSERT ON events "
            "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END"
        )


def test_failed_event_insert_answers_503_and_rolls_back(intake: Intake) -> None:
    _fail_event_inserts(intake)
    response = post(intake, payload())
    assert_problem(response, 503, "ledger-unavailable")
    assert_nothing_written(intake)  # the contact row went with the rolled-back transaction


def test_failed_ledger_write_logs_no_email(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    _fail_event_inserts(intake)
    caplog.set_level(logging.DEBUG)
    assert post(intake, payload()).status_code == 503
    assert "ledger write failed" in caplog.text
    assert EMAIL.lower() not in caplog.text.lower()


# --- the broker message and the logs carry no e-mail ---------------------------------------------


def test_published_message_carries_only_destination_and_contact_id(intake: Intake) -> None:
    response = post(intake, payload())
    assert response.status_code == 202
    [contact] = intake.all(Contact)

    # Published off the request path: one delivery task, or one dispatch message for all.
    files = intake.broker_messages()
    assert 1 <= len(files) <= len(DESTINATIONS)
    for path in files:
        raw = path.read_text()
        message = json.loads(raw)
        assert message["headers"]["task"] in ("consent_relay.deliver_contact", DISPATCH)
        assert message["properties"]["body_encoding"] == "base64"
        decoded = base64.b64decode(message["body"]).decode()
        args, kwargs, _embed = json.loads(decoded)
        assert kwargs == {}
        entries = args[0] if message["headers"]["task"] == DISPATCH else [args]
        assert all(len(entry) in (2, 3) for entry in entries)  # destination, id, request id
        for text in (raw, decoded):
            for needle in (EMAIL, EMAIL.lower(), "jane.doe", "example.com"):
                assert needle.lower() not in text.lower()
    assert intake.published() == sorted((name, contact.id) for name in DESTINATIONS)


def test_no_email_in_logs_during_an_accepted_request(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = post(intake, payload())
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    [accepted] = [
        r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "accepted"
    ]
    assert (accepted["source"], accepted["event_id"]) == ("signup", event_id)  # the capture works
    text = caplog.text.lower()
    for needle in (EMAIL.lower(), "jane.doe", "news@example"):
        assert needle not in text


def test_no_email_in_logs_for_rejected_requests(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = payload()
    post(intake, body, headers=_wrong_secret(body))
    post(intake, payload(tracking_consent="maybe"))
    post(intake, payload(), headers=headers_for(body, content_type="text/plain"))
    assert "signature rejected" in caplog.text
    assert "jane.doe" not in caplog.text.lower()
