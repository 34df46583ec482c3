"""The generic `token` kind (docs/reference/sources/salesforce.md#flow-http-callouts): the canonical
payload behind a token or Basic auth, duplicates by Idempotency-Key or body hash, and the
failures."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.source_world import SourceWorld, basic_auth, config_error

TOKEN = "token-kind-secret-0123456789abcdefghij"
OTHER_TOKEN = "token-kind-secret-rotated-zyxwvu987654"
USERNAME = "flow-callout"
CONFIG = f"""
kind = "token"
secrets = ["{TOKEN}", "{OTHER_TOKEN}"]
source = "crm_flow"
"""
BASIC_CONFIG = CONFIG + f'username = "{USERNAME}"\n'
DECISION = {
    "email": "Jane.Doe@Example.com",
    "tracking_consent": "withdrawn",
    "source": "salesforce_flow",
    "source_id": "003xx000004TmiQ",
    "occurred_at": "2024-05-01T09:30:00Z",
}
BODY = json.dumps(DECISION).encode()
JSON = {"Content-Type": "application/json"}


def body_with(**changes: Any) -> bytes:
    return json.dumps({**DECISION, **changes}).encode()


def test_query_token_records_the_canonical_decision(source_world: SourceWorld) -> None:
    signed = source_world.kind.sign(BODY, "application/json", source_world.url, 0.0)
    assert signed.url == f"{source_world.url}?token={TOKEN}"

    response = source_world.post(signed.url, BODY, dict(signed.headers))

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "Jane.Doe@Example.com"
    assert event["decision"] == "withdrawn"
    assert event["consent_source"] == "salesforce_flow"
    assert event["consent_source_id"] == "003xx000004TmiQ"
    assert event["occurred_at"] == dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
    assert event["delivery_id"] == "sha256:" + hashlib.sha256(BODY).hexdigest()


def test_source_defaults_to_the_configured_label(source_world: SourceWorld) -> None:
    body = json.dumps({"email": "a@example.com", "tracking_consent": "granted"}).encode()
    assert source_world.send(body).status_code == 202
    assert source_world.events()[0]["consent_source"] == "crm_flow"


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/webhooks/src", {"X-Consent-Relay-Token": TOKEN}),
        ("/webhooks/src", {"Authorization": f"Bearer {TOKEN}"}),
        (f"/webhooks/src?token={OTHER_TOKEN}", {}),
    ],
    ids=["header", "bearer", "rotated-secret"],
)
def test_token_in_each_accepted_place(
    source_world: SourceWorld, url: str, headers: dict[str, str]
) -> None:
    assert source_world.post(url, BODY, {**JSON, **headers}).status_code == 202
    assert len(source_world.events()) == 1


@pytest.mark.parametrize(
    ("url", "headers", "detail"),
    [
        ("/webhooks/src?token=wrong-token", {}, "Token does not match an active secret."),
        ("/webhooks/src", {"Authorization": "Bearer wrong-token"}, "Token does not match"),
        ("/webhooks/src", {}, "Missing token"),
        ("/webhooks/src", {"Authorization": "Bearer "}, "Missing token"),
        # Without a configured username, Basic auth is not a way in.
        ("/webhooks/src", basic_auth(USERNAME, TOKEN), "Missing token"),
    ],
    ids=["wrong-query", "wrong-bearer", "missing", "empty-bearer", "basic-without-username"],
)
def test_bad_or_missing_token_is_refused(
    source_world: SourceWorld, url: str, headers: dict[str, str], detail: str
) -> None:
    response = source_world.post(url, BODY, {**JSON, **headers})
    assert response.status_code == 401
    assert detail in response.get_json()["detail"]
    assert "wrong-token" not in response.get_data(as_text=True)
    assert source_world.events() == []


def test_basic_auth_when_a_username_is_configured(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, BASIC_CONFIG)
    signed = source_world.kind.sign(BODY, "application/json", source_world.url, 0.0)
    assert signed.url == source_world.url  # the secret travels in the header, not the URL
    assert signed.headers["Authorization"] == basic_auth(USERNAME, TOKEN)["Authorization"]
    assert source_world.post(signed.url, BODY, dict(signed.headers)).status_code == 202
    assert source_world.post(
        "/webhooks/src", body_with(source_id="2"), basic_auth(USERNAME, OTHER_TOKEN)
    )
    assert len(source_world.events()) == 2


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        (basic_auth("someone-else", TOKEN), "Basic credentials do not match."),
        (basic_auth(USERNAME, "wrong-password"), "Basic credentials do not match."),
        ({**JSON, "Authorization": "Basic not*base64"}, "Malformed Basic authorization header."),
        (
            {**JSON, "Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            "Malformed Basic authorization header.",
        ),
    ],
    ids=["wrong-user", "wrong-password", "not-base64", "no-colon"],
)
def test_bad_basic_credentials_are_refused(
    tmp_path: Path, headers: dict[str, str], detail: str
) -> None:
    source_world = SourceWorld(tmp_path, BASIC_CONFIG)
    response = source_world.post("/webhooks/src", BODY, headers)
    assert response.status_code == 401
    assert response.get_json()["detail"] == detail


def test_wrong_basic_is_refused_even_with_a_good_query_token(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, BASIC_CONFIG)
    url = f"/webhooks/src?token={TOKEN}"
    assert source_world.post(url, BODY, basic_auth(USERNAME, "wrong-password")).status_code == 401


def test_idempotency_key_recognises_a_retry_with_another_body(source_world: SourceWorld) -> None:
    headers = {**JSON, "X-Consent-Relay-Token": TOKEN, "Idempotency-Key": "flow-run-42"}
    assert source_world.post("/webhooks/src", BODY, headers).status_code == 202
    again = source_world.post(
        "/webhooks/src", body_with(occurred_at="2024-05-01T09:31:00Z"), headers
    )
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    [event] = source_world.events()
    assert event["delivery_id"] == "flow-run-42"


def test_same_body_under_two_idempotency_keys_is_two_events(source_world: SourceWorld) -> None:
    for key in ("run-1", "run-2"):
        headers = {**JSON, "X-Consent-Relay-Token": TOKEN, "Idempotency-Key": key}
        assert source_world.post("/webhooks/src", BODY, headers).status_code == 202
    assert [e["delivery_id"] for e in source_world.events()] == ["run-1", "run-2"]


def test_identical_body_without_a_key_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send(BODY).status_code == 202
    again = source_world.send(BODY)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert source_world.send(body_with(tracking_consent="granted")).status_code == 202
    assert [e["decision"] for e in source_world.events()] == ["withdrawn", "granted"]


@pytest.mark.parametrize("key", ["", "k" * 256, "bad\x01key"], ids=["empty", "too-long", "control"])
def test_malformed_idempotency_key_is_a_400(source_world: SourceWorld, key: str) -> None:
    headers = {**JSON, "X-Consent-Relay-Token": TOKEN, "Idempotency-Key": key}
    response = source_world.post("/webhooks/src", BODY, headers)
    assert response.status_code == 400
    assert response.get_json()["detail"] == "Malformed Idempotency-Key header."
    assert source_world.events() == []


def test_idempotency_key_at_the_length_limit_is_accepted(source_world: SourceWorld) -> None:
    headers = {**JSON, "X-Consent-Relay-Token": TOKEN, "Idempotency-Key": "k" * 255}
    assert source_world.post("/webhooks/src", BODY, headers).status_code == 202


def test_idempotency_key_is_not_read_before_the_token(source_world: SourceWorld) -> None:
    headers = {**JSON, "Idempotency-Key": "k" * 256}
    assert source_world.post("/webhooks/src", BODY, headers).status_code == 401


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({"tracking_consent": "granted"}, {"email": ["Missing data for required field."]}),
        (
            {"email": "a@example.com", "tracking_consent": "maybe"},
            {"tracking_consent": ["Must be one of: granted, denied, withdrawn, unknown."]},
        ),
        (
            {"email": "a@example.com", "tracking_consent": "granted", "extra": 1},
            {"extra": ["Unknown field."]},
        ),
    ],
    ids=["no-email", "bad-state", "unknown-field"],
)
def test_invalid_fields_answer_422_with_each_message(
    source_world: SourceWorld, payload: dict[str, Any], errors: dict[str, Any]
) -> None:
    response = source_world.send_json(payload)
    assert response.status_code == 422
    body = response.get_json()
    assert body["type"].endswith("validation-failed")
    assert body["errors"] == errors
    assert source_world.events() == []


def test_future_decision_time_is_a_422(source_world: SourceWorld) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    response = source_world.send(body_with(occurred_at=later))
    assert response.status_code == 422
    assert "occurred_at" in response.get_json()["errors"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"email=a", "application/x-www-form-urlencoded", 415),
    ],
    ids=["malformed-json", "form-body"],
)
def test_unreadable_body(
    source_world: SourceWorld, body: bytes, content_type: str, status: int
) -> None:
    assert source_world.send(body, content_type).status_code == status


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('source_id = "{x}"\n', "sources.src.source_id: Kind 'token' takes source_id from"),
        ('[sources.src.mapping]\nconsent = "c"\n', "sources.src.mapping: Kind 'token' sends"),
        ('url = "https://relay.example.com/webhooks/src"\n', "sources.src.url: Not used by kind"),
    ],
    ids=["source-id", "mapping", "foreign-option"],
)
def test_token_config_errors_name_the_key(tmp_path: Path, extra: str, expected: str) -> None:
    assert expected in config_error(tmp_path, CONFIG + extra)


def test_short_token_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'kind = "token"\nsecrets = ["too-short"]\nsource = "s"\n')
    assert "sources.src.secrets.0: Secret must be at least 32 characters." in message
