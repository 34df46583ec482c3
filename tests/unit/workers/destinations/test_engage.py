"""The Mapp Engage client: answer classification, then real calls against the emulator."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, request

from emulators.engage import EmulatorServer, create_emulator_app
from emulators.engage_state import ApiError, EngageState
from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from workers.destinations.engage import EngageClient, Verdict, classify
from workers.destinations.errors import (
    AuthError,
    DeliveryError,
    RateLimitedError,
    RejectedError,
    TransientError,
)

USERNAME = "api-user@example.com"
PASSWORD = "engage-demo-password"
EMAIL = "Jane.Doe+tag@Example.com"
ATTRIBUTE_NAMES = ("tracking_consent", "tracking_consent_source", "tracking_consent_source_id")


def envelope(code: str, message: str, **extra: str) -> str:
    return json.dumps({"errorActor": "CLIENT", "errorCode": code, "message": message, **extra})


NO_SUCH_OBJECT = envelope(
    "NO_SUCH_OBJECT",
    f"Contact with identifier={EMAIL} does not exist.",
    objectType="Contact",
    propertyName="identifier",
    propertyValue=EMAIL,
)
ALREADY_EXISTS = envelope(
    "INVALID_PARAMETER",
    "Such contact already exists",
    objectType="Contact",
    propertyName="emailAddress",
)
PERMISSION_DENIED = envelope(
    "PERMISSION_DENIED",
    "Access denied: check that the corresponding system user account is Type 'API' or 'Hybrid'",
)
RATE_LIMIT_JSON = json.dumps(
    {
        "errorActor": "SERVER",
        "errorCode": "SYSTEM_ERROR",
        "message": "Database Access Limit Exceeded",
    }
)


# --- classify ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, json.dumps({"contactId": 1, "emailAddress": EMAIL, "attributes": []}), Verdict.OK),
        (204, "", Verdict.OK),
        (400, NO_SUCH_OBJECT, Verdict.CONTACT_MISSING),
        (400, ALREADY_EXISTS, Verdict.CONTACT_EXISTS),
        (
            400,
            envelope("INVALID_PARAMETER", "User with email does already exist"),
            Verdict.CONTACT_EXISTS,
        ),
        (
            400,
            envelope("INVALID_PARAMETER", "Value of attribute x exceeds 2000 characters"),
            Verdict.REJECTED,
        ),
        (
            400,
            envelope("MISSING_PARAMETER", "Parameter emailAddress is mandatory"),
            Verdict.REJECTED,
        ),
        (400, envelope("INVALID_REQUEST", "cannot deserialize value"), Verdict.REJECTED),
        (401, envelope("PERMISSION_DENIED", "Authorization header is missing"), Verdict.AUTH),
        (403, PERMISSION_DENIED, Verdict.AUTH),
        (417, "", Verdict.AUTH),
        (500, RATE_LIMIT_JSON, Verdict.RATE_LIMITED),
        (500, "Database Access Limit Exceeded", Verdict.RATE_LIMITED),
        (500, "<html><body>DATABASE ACCESS LIMIT EXCEEDED</body></html>", Verdict.RATE_LIMITED),
        (500, json.dumps({"errorActor": "SERVER", "message": "Internal error"}), Verdict.TRANSIENT),
        (502, "<html>Bad Gateway</html>", Verdict.TRANSIENT),
        (503, "", Verdict.TRANSIENT),
        (504, "Gateway Timeout", Verdict.TRANSIENT),
        (408, "", Verdict.TRANSIENT),
        (429, "", Verdict.TRANSIENT),
        (404, envelope("INVALID_REQUEST", "Not Found"), Verdict.REJECTED),
        (406, envelope("INVALID_REQUEST", "Not Acceptable"), Verdict.REJECTED),
        (
            415,
            envelope("INVALID_REQUEST", "Content-Type must be application/json"),
            Verdict.REJECTED,
        ),
        (301, "", Verdict.REJECTED),
    ],
)
def test_classify(status: int, body: str, verdict: Verdict) -> None:
    assert classify(status, body) is verdict


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<html>Bad Request</html>",
        "{not json",
        "null",
        "[1, 2]",
        '"NO_SUCH_OBJECT"',
        "NO_SUCH_OBJECT",  # the code as plain text is not the JSON field
        "Such contact already exists",  # neither is the message
        json.dumps([{"errorCode": "NO_SUCH_OBJECT"}]),
        json.dumps({"errorCode": None, "message": None}),
        json.dumps({"message": 42}),
    ],
)
def test_classify_400_with_unusable_body_is_rejected(body: str) -> None:
    assert classify(400, body) is Verdict.REJECTED


@pytest.mark.parametrize("body", ["", "not json", "[]", "{"])
def test_classify_non_json_5xx_is_transient(body: str) -> None:
    assert classify(500, body) is Verdict.TRANSIENT
    assert classify(503, body) is Verdict.TRANSIENT


def test_rate_limit_phrase_counts_only_on_500() -> None:
    assert classify(503, "Database Access Limit Exceeded") is Verdict.TRANSIENT
    assert classify(400, "Database Access Limit Exceeded") is Verdict.REJECTED


def test_error_hierarchy() -> None:
    assert issubclass(RateLimitedError, TransientError)
    assert {
        cls.outcome for cls in (TransientError, RateLimitedError, AuthError, RejectedError)
    } == {
        "transient",
        "rate_limited",
        "auth",
        "rejected",
    }
    error = AuthError("Engage answered auth", status=403, body="x" * 2000)
    assert len(error.body) == 500
    assert str(error).startswith("Engage answered auth (HTTP 403): xxx")


# --- EngageClient against the emulator ----------------------------------------------------------


def consent(
    email: str = EMAIL,
    decision: str = "denied",
    source: str = "registration_form",
    source_id: str | None = "form-7",
) -> ConsentWrite:
    return ConsentWrite(email=email, tracking_consent=decision, source=source, source_id=source_id)


def destination(
    url: str, password: str = PASSWORD, read_timeout: float = 5.0
) -> DestinationSettings:
    return DestinationSettings(
        name="engage",
        kind="mapp-engage",
        base_url=url,
        username=USERNAME,
        password=password,
        connect_timeout_seconds=2.0,
        read_timeout_seconds=read_timeout,
    )


def test_update_of_a_missing_contact_creates_it(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    status = EngageClient(destination(emulator.url)).write(consent())

    assert status == 200
    state = emulator_state()
    contact = state["contacts"]["jane.doe+tag@example.com"]
    assert contact["emailAddress"] == EMAIL  # exactly as sent, case and "+" kept
    assert contact["attributes"] == {
        "tracking_consent": "denied",
        "tracking_consent_source": "registration_form",
        "tracking_consent_source_id": "form-7",
    }
    assert [entry["call"] for entry in contact["history"]] == ["create"]
    calls = [(r["method"], r["path"], r["status"]) for r in state["requests"]]
    assert calls == [
        ("POST", "/api/rest/contact/update", 400),
        ("POST", "/api/rest/contact/create", 200),
    ]
    # The "+" arrives intact (a raw "+" in a query string would decode to a space).
    assert state["requests"][0]["query"] == {
        "identifierType": "EMAIL",
        "unifiedIdentifierName": EMAIL,
    }


def test_existing_contact_is_updated(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    client = EngageClient(destination(emulator.url))
    client.write(consent(decision="granted", source_id="first"))
    before = len(emulator_state()["requests"])

    status = client.write(
        consent(decision="withdrawn", source="preference_center", source_id="second")
    )

    assert status == 200
    state = emulator_state()
    contact = state["contacts"]["jane.doe+tag@example.com"]
    assert [entry["call"] for entry in contact["history"]] == ["create", "update"]
    assert contact["attributes"] == {
        "tracking_consent": "withdrawn",
        "tracking_consent_source": "preference_center",
        "tracking_consent_source_id": "second",
    }
    new_requests = state["requests"][before:]
    assert [(r["path"], r["status"]) for r in new_requests] == [("/api/rest/contact/update", 200)]
    assert state["counts"] == {"update": 1, "create": 1, "get": 0, "edit": 0, "delete": 0}


def test_existing_contact_is_found_whatever_the_case(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    client = EngageClient(destination(emulator.url))
    client.write(consent(email="jane.doe+tag@example.com", decision="granted"))
    client.write(consent(email=EMAIL, decision="denied"))
    contacts = emulator_state()["contacts"]
    assert list(contacts) == ["jane.doe+tag@example.com"]
    assert contacts["jane.doe+tag@example.com"]["attributes"]["tracking_consent"] == "denied"


def test_all_three_attributes_are_sent_every_time(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    client = EngageClient(destination(emulator.url))
    client.write(consent(source_id="abc"))
    client.write(consent(decision="granted", source_id=None))
    history = emulator_state()["contacts"]["jane.doe+tag@example.com"]["history"]
    assert all(set(entry["attributes"]) == set(ATTRIBUTE_NAMES) for entry in history)


def test_source_id_none_is_sent_as_empty_string(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    EngageClient(destination(emulator.url)).write(consent(source_id=None))
    contact = emulator_state()["contacts"]["jane.doe+tag@example.com"]
    assert contact["attributes"]["tracking_consent_source_id"] == ""


def test_trailing_slash_in_base_url(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    assert EngageClient(destination(emulator.url + "/")).write(consent()) == 200
    assert emulator_state()["requests"][0]["path"] == "/api/rest/contact/update"


def test_wrong_password_raises_auth_error(
    emulator: EmulatorServer, emulator_state: Callable[[], dict[str, Any]]
) -> None:
    with pytest.raises(AuthError) as caught:
        EngageClient(destination(emulator.url, password="wrong-password")).write(consent())
    assert caught.value.status == 403
    assert caught.value.outcome == "auth"
    assert "PERMISSION_DENIED" in caught.value.body
    assert "wrong-password" not in str(caught.value)
    state = emulator_state()
    assert state["contacts"] == {}
    assert [r["status"] for r in state["requests"]] == [403]  # no create after a refusal


def test_closed_port_raises_transient_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        EngageClient(destination(f"http://127.0.0.1:{port}")).write(consent())
    assert type(caught.value) is TransientError
    assert caught.value.status is None
    assert "unreachable" in str(caught.value)
    assert EMAIL not in str(caught.value)
    assert time.monotonic() - started < 5


# --- emulator faults (extra checks inserted into the emulator app) -------------------------------


@pytest.fixture
def faulty() -> Iterator[tuple[Flask, EmulatorServer]]:
    app = create_emulator_app(EngageState(USERNAME, PASSWORD))
    with EmulatorServer(app) as server:
        yield app, server


def test_create_race_falls_back_to_update(faulty: tuple[Flask, EmulatorServer]) -> None:
    app, server = faulty
    state: EngageState = app.extensions["engage_state"]

    def another_writer_wins_the_create() -> None:
        if request.path.endswith("/contact/create") and state.find_contact(EMAIL) is None:
            state.create_contact(EMAIL, {"city": "Oslo"})

    app.extensions["engage_checks"].append(another_writer_wins_the_create)

    assert EngageClient(destination(server.url)).write(consent()) == 200

    snapshot = state.snapshot()
    calls = [(r["path"].rsplit("/", 1)[1], r["status"]) for r in snapshot["requests"]]
    assert calls == [("update", 400), ("create", 400), ("update", 200)]
    attributes = snapshot["contacts"]["jane.doe+tag@example.com"]["attributes"]
    assert attributes["tracking_consent"] == "denied"
    assert attributes["city"] == "Oslo"


@pytest.mark.parametrize(
    ("status", "message", "error", "outcome"),
    [
        # Engage's rate limit is a 500 with this text, no 429
        # (docs/reference/engage.md#rate-limits).
        (500, "Database Access Limit Exceeded", RateLimitedError, "rate_limited"),
        (502, "Bad Gateway", TransientError, "transient"),
    ],
)
def test_server_errors_raise_their_own_error_type(
    faulty: tuple[Flask, EmulatorServer],
    status: int,
    message: str,
    error: type[Exception],
    outcome: str,
) -> None:
    app, server = faulty

    def failing() -> None:
        raise ApiError(status, "SYSTEM_ERROR", message, error_actor="SERVER")

    app.extensions["engage_checks"].append(failing)
    with pytest.raises(error) as caught:
        EngageClient(destination(server.url)).write(consent())
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.outcome == outcome


def test_bad_request_raises_rejected_error(faulty: tuple[Flask, EmulatorServer]) -> None:
    _, server = faulty
    long_source = "s" * 2001  # Engage's 2000-character attribute limit
    with pytest.raises(RejectedError) as caught:
        EngageClient(destination(server.url)).write(consent(source=long_source))
    assert caught.value.status == 400
    assert isinstance(caught.value, DeliveryError)


def test_wrong_base_path_is_rejected_not_retried(faulty: tuple[Flask, EmulatorServer]) -> None:
    _, server = faulty
    with pytest.raises(RejectedError) as caught:
        EngageClient(destination(server.url + "/engage")).write(consent())
    assert caught.value.status == 404


def test_read_timeout_raises_transient_error(faulty: tuple[Flask, EmulatorServer]) -> None:
    app, server = faulty

    def hang() -> None:
        time.sleep(0.6)

    app.extensions["engage_checks"].append(hang)
    with pytest.raises(TransientError, match="timed out") as caught:
        EngageClient(destination(server.url, read_timeout=0.2)).write(consent())
    assert caught.value.status is None


# --- read-back (workers/verification/) --------------------------------------------------------


def test_read_back_finds_the_value_and_an_out_of_band_edit(
    engage_settings: Any, emulator: Any
) -> None:
    client = EngageClient(engage_settings())
    client.write(ConsentWrite("Reader@Example.com", "denied", "form", None))
    reading = client.read(ConsentWrite("Reader@Example.com", "denied", "form", None))
    assert reading.matches and reading.seen == "denied"
    edited = requests.post(
        f"{emulator.url}/_emulator/contacts/reader@example.com/edit",
        json={"attributes": {"tracking_consent": "granted"}},
        timeout=5,
    )
    assert edited.status_code == 200
    drift = client.read(ConsentWrite("Reader@Example.com", "denied", "form", None))
    assert (drift.seen, drift.expected, drift.matches) == ("granted", "denied", False)
    missing = client.read(ConsentWrite("nobody@example.com", "granted", "form", None))
    assert missing.seen == "(no contact)"
    unknown = requests.post(
        f"{emulator.url}/_emulator/contacts/nobody@example.com/edit",
        json={"attributes": {"tracking_consent": "x"}},
        timeout=5,
    )
    assert unknown.status_code == 404
