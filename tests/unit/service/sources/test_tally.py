"""Tally (docs/reference/sources/tally.md): signature, fixture -> decision, answers, and the
failures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from service.sources.base import Authenticated, InboundRequest, SignatureError
from service.sources.fixtures import load_fixture
from service.sources.tally import signature, verify
from tests.helpers.source_world import SourceWorld, config_error, fixture_json

SECRET = "tally-webhook-secret"
OPTION = "I agree to receive product news by e-mail"
# Mapped by the checkbox group's label; the group's option ids arrive as option texts.
CONFIG = f"""
kind = "tally"
secrets = ["{SECRET}"]
source = "tally:{{form_id}}"

[sources.src.mapping]
consent = "Marketing consent"
values = {{ "{OPTION}" = "granted" }}
when_missing = "unknown"
"""
# Mapped by the per-option field's key, whose value is a boolean; the address by label.
BY_KEY = f"""
kind = "tally"
secrets = ["{SECRET}"]
source = "tally-{{form_name}}"
source_id = "{{submission_id}}/{{respondent_id}}"

[sources.src.mapping]
email = "Email"
consent = "question_mRoq1A_5b6e2c1f-8d7a-4b0e-9f3c-2a1d4e6f7a8b"
"""


def fixture_payload() -> dict[str, Any]:
    return fixture_json("tally", "form_response")


def consent_fields(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkbox group and its per-option field."""
    group, option = payload["data"]["fields"][2:4]
    return group, option


def test_self_computed_vector() -> None:
    # docs/reference/senders.md#test-vectors (self-computed from the documented algorithm).
    body = b'{"eventId":"a4cb511e","eventType":"FORM_RESPONSE"}'
    assert signature("tally-secret", body) == "yw61Au6Mt/ek3DcgcyW6Y+NRZKxvxCyiSaMjV1g+b04="


def test_verify_accepts_the_vector_with_any_active_secret() -> None:
    body = b'{"eventId":"a4cb511e","eventType":"FORM_RESPONSE"}'
    headers = {"tally-signature": "yw61Au6Mt/ek3DcgcyW6Y+NRZKxvxCyiSaMjV1g+b04="}
    verify(headers, body, ["retired-secret", "tally-secret"])
    with pytest.raises(SignatureError, match="No signature matches"):
        verify(headers, body, ["retired-secret"])


def test_documented_example_becomes_a_granted_decision(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("tally", "form_response")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "dylan@example.fr"
    assert event["decision"] == "granted"
    assert event["consent_source"] == "tally:XxA4WO"
    assert event["consent_source_id"] == "XxA4WO:Z9Z97Go"
    assert event["delivery_id"] == "a4cb511e-3c3f-4f3e-9d0b-6b1f7c2e8d41"
    assert event["occurred_at"] == dt.datetime(2026, 8, 14, 10, 54, 58, tzinfo=dt.UTC)


def test_per_option_key_and_label_locators(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, BY_KEY)
    assert source_world.send_fixture("tally", "form_response").status_code == 202
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("dylan@example.fr", "granted")
    assert event["consent_source"] == "tally-Newsletter sign-up"
    assert event["consent_source_id"] == "Z9Z97Go/Pdgjl70"


def test_unticked_option_is_denied(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, BY_KEY)
    payload = fixture_payload()
    group, option = consent_fields(payload)
    group["value"], option["value"] = [], False
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["decision"] == "denied"


def test_unticked_group_falls_back_to_when_missing(source_world: SourceWorld) -> None:
    payload = fixture_payload()
    consent_fields(payload)[0]["value"] = None
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["decision"] == "unknown"


def test_option_id_without_options_is_kept_and_unmapped(source_world: SourceWorld) -> None:
    payload = fixture_payload()
    del consent_fields(payload)[0]["options"]
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert (
        "'5b6e2c1f-8d7a-4b0e-9f3c-2a1d4e6f7a8b' is not in the mapping"
        in (response.get_json()["reason"])
    )


def test_a_shared_label_is_not_a_locator(source_world: SourceWorld) -> None:
    payload = fixture_payload()
    payload["data"]["fields"][1]["label"] = "Marketing consent"
    response = source_world.send_json(payload)
    # when_missing = "unknown": the ambiguous label never picks one of the two answers.
    assert response.status_code == 202
    assert source_world.events()[0]["decision"] == "unknown"


def test_top_level_created_at_stands_in(source_world: SourceWorld) -> None:
    payload = fixture_payload()
    del payload["data"]["createdAt"]
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["occurred_at"] == dt.datetime(
        2026, 8, 14, 10, 55, tzinfo=dt.UTC
    )


def test_redelivery_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("tally", "form_response").status_code == 202
    again = source_world.send_fixture("tally", "form_response")
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


def test_no_email_field_is_ignored_with_its_reason(source_world: SourceWorld) -> None:
    payload = fixture_payload()
    del payload["data"]["fields"][0]
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No e-mail address in the e-mail field."
    assert source_world.ignored()[0]["delivery_id"] == payload["eventId"]


def test_wrong_secret_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("tally", "form_response")
    headers = {"Content-Type": "application/json", "Tally-Signature": signature("nope!!", body)}
    response = source_world.post("/webhooks/src", body, headers)
    assert response.status_code == 401
    assert source_world.events() == []


def test_missing_header_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("tally", "form_response")
    response = source_world.post("/webhooks/src", body, {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert "Missing Tally-Signature" in response.get_json()["detail"]


def test_tampered_body_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("tally", "form_response")
    headers = {"Content-Type": "application/json", "Tally-Signature": signature(SECRET, body)}
    forged = body.replace(b"dylan@example.fr", b"mallory@example.fr")
    assert source_world.post("/webhooks/src", forged, headers).status_code == 401
    assert source_world.events() == []


def test_prefixed_signature_is_refused() -> None:
    # Tally sends no `sha256=` prefix (docs/reference/sources/tally.md#authentication); a
    # Typeform-style value is not accepted.
    body = b'{"eventId":"a4cb511e","eventType":"FORM_RESPONSE"}'
    with pytest.raises(SignatureError):
        verify(
            {"tally-signature": "sha256=" + signature("tally-secret", body)}, body, ["tally-secret"]
        )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"eventId": 1, "eventType": "FORM_RESPONSE"}', 400),
        (b'{"eventId": "e1", "eventType": "FORM_RESPONSE", "data": []}', 400),
    ],
    ids=["not-json", "not-an-object", "no-event-id", "data-not-an-object"],
)
def test_malformed_body_is_a_400(source_world: SourceWorld, body: bytes, status: int) -> None:
    assert source_world.send(body).status_code == status


def test_form_encoded_body_is_a_415(source_world: SourceWorld) -> None:
    assert source_world.send(b"eventId=e1", "application/x-www-form-urlencoded").status_code == 415


def test_unsupported_event_type_is_ignored(source_world: SourceWorld) -> None:
    response = source_world.send(b'{"eventId":"evt_other","eventType":"FORM_DELETED"}')
    assert response.status_code == 200
    assert "'FORM_DELETED' is not handled by the tally source" in response.get_json()["reason"]
    [ignored] = source_world.ignored()
    assert (ignored["delivery_id"], ignored["event_type"]) == ("evt_other", "FORM_DELETED")


def test_parse_offers_keys_labels_and_variables(source_world: SourceWorld) -> None:
    body, content_type = load_fixture("tally", "form_response")
    request = InboundRequest("POST", source_world.url, {}, {}, body, content_type)
    [event] = source_world.kind.parse(request, Authenticated())
    assert event.answers["question_jkl012"] == "Business"
    assert event.answers["Which plan?"] == "Business"
    assert event.answers["Marketing consent"] == [OPTION]
    assert event.answers[f"Marketing consent ({OPTION})"] is True
    assert event.variables == {
        "form_id": "XxA4WO",
        "form_name": "Newsletter sign-up",
        "response_id": "Z9Z97Go",
        "submission_id": "Z9Z97Go",
        "respondent_id": "Pdgjl70",
        "event_id": "a4cb511e-3c3f-4f3e-9d0b-6b1f7c2e8d41",
    }


@pytest.mark.parametrize(
    ("source_toml", "expected"),
    [
        (
            'kind = "tally"\nsecrets = ["short"]\nsource = "t"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.secrets.0: Secret must be at least 6 characters.",
        ),
        (
            f'kind = "tally"\nsecrets = ["{SECRET}"]\nsource = "t"',
            "sources.src.mapping.consent: Required by kind 'tally'.",
        ),
        (
            f'kind = "tally"\nsecrets = ["{SECRET}"]\nsource = "t:{{form_title}}"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.source: Unknown template field(s) ['form_title']",
        ),
        (
            f'kind = "tally"\nsecrets = ["{SECRET}"]\nsource = "t"\nusername = "u"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.username: Not used by kind 'tally'.",
        ),
    ],
    ids=["short-secret", "no-consent", "unknown-variable", "foreign-option"],
)
def test_tally_config_errors_name_the_key(tmp_path: Path, source_toml: str, expected: str) -> None:
    assert expected in config_error(tmp_path, source_toml)
