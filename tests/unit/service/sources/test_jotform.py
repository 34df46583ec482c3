"""Jotform (docs/reference/sources/jotform.md): URL token, multipart fixture -> decision, and
failures."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from urllib3 import encode_multipart_formdata

from service.sources.fixtures import fixture_path
from tests.helpers.source_world import SourceWorld, config_error

TOKEN = "jotform-url-token-0123456789abcdefghij"
OTHER_TOKEN = "jotform-url-token-rotated-9876543210zyx"
CONSENT_LABEL = "I agree to receive e-mails about tutoring offers"
CONFIG = f"""
kind = "jotform"
secrets = ["{TOKEN}", "{OTHER_TOKEN}"]
source = "jotform:{{form_title}}"

[sources.src.mapping]
email = "email"
consent = "consent"
values = {{ "{CONSENT_LABEL}" = "granted", "No thanks" = "denied" }}
"""
SUBMISSION_ID = "6084250982513018472"


def fixture_fields() -> dict[str, str]:
    fields: dict[str, str] = json.loads(fixture_path("jotform", "submission").read_text())
    return fields


def with_raw(**changes: Any) -> dict[str, str]:
    """The fixture's form fields with rawRequest keys changed (None removes the key)."""
    fields = fixture_fields()
    raw = json.loads(fields["rawRequest"])
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    fields["rawRequest"] = json.dumps(raw)
    return fields


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    return encode_multipart_formdata(fields, boundary="test-boundary")


def send_fields(source_world: SourceWorld, fields: dict[str, str]) -> Any:
    body, content_type = multipart(fields)
    return source_world.send(body, content_type)


def test_documented_submission_becomes_a_granted_decision(source_world: SourceWorld) -> None:
    before = dt.datetime.now(dt.UTC)
    response = source_world.send_fixture("jotform", "submission")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "niloth.p@example.com"
    assert event["decision"] == "granted"
    assert event["consent_source"] == "jotform:Tutor Appointment Form"
    assert event["consent_source_id"] == f"243231271343446:{SUBMISSION_ID}"
    assert event["delivery_id"] == SUBMISSION_ID
    # Jotform documents no submission time: the time of receipt stands in.
    assert event["occurred_at_given"] is False
    assert before - dt.timedelta(seconds=1) <= event["occurred_at"]


def test_sign_puts_the_token_in_the_query(source_world: SourceWorld) -> None:
    signed = source_world.kind.sign(b"", "multipart/form-data", source_world.url, 0.0)
    assert signed.url == f"{source_world.url}?token={TOKEN}"
    assert "Authorization" not in signed.headers


def test_prefixed_keys_are_locators_too(tmp_path: Path) -> None:
    config = CONFIG.replace('email = "email"', 'email = "q4_email"').replace(
        'consent = "consent"', 'consent = "q5_consent"'
    )
    source_world = SourceWorld(tmp_path, config)
    assert source_world.send_fixture("jotform", "submission").status_code == 202
    assert source_world.events()[0]["decision"] == "granted"


def test_default_email_is_the_first_address_under_an_email_key(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG.replace('email = "email"\n', ""))
    fields = with_raw(q2_notes="write to someone@example.org", q4_email="first@example.com")
    assert send_fields(source_world, fields).status_code == 202
    assert source_world.events()[0]["email"] == "first@example.com"


def test_each_ticked_label_is_tried(source_world: SourceWorld) -> None:
    # A checkbox is a list of the selected labels (UNVERIFIED,
    # docs/reference/sources/jotform.md#payload).
    fields = with_raw(q5_consent=["Send me a printed brochure", CONSENT_LABEL])
    assert send_fields(source_world, fields).status_code == 202
    assert source_world.events()[0]["decision"] == "granted"


def test_declining_answer_is_denied(source_world: SourceWorld) -> None:
    assert send_fields(source_world, with_raw(q5_consent="No thanks")).status_code == 202
    assert source_world.events()[0]["decision"] == "denied"


def test_unticked_checkbox_is_ignored_with_its_reason(source_world: SourceWorld) -> None:
    response = send_fields(source_world, with_raw(q5_consent=None))
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No consent answer in 'consent'."
    [ignored] = source_world.ignored()
    assert (ignored["delivery_id"], ignored["event_type"]) == (SUBMISSION_ID, "submission")


def test_unticked_checkbox_can_mean_unknown(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG + 'when_missing = "unknown"\n')
    assert send_fields(source_world, with_raw(q5_consent=None)).status_code == 202
    assert source_world.events()[0]["decision"] == "unknown"


def test_a_name_shared_by_two_fields_is_not_a_locator(source_world: SourceWorld) -> None:
    response = send_fields(source_world, with_raw(q9_email="other@example.com"))
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No e-mail address in the answer 'email'."


def test_a_bare_key_keeps_its_own_value(source_world: SourceWorld) -> None:
    assert send_fields(source_world, with_raw(email="bare@example.com")).status_code == 202
    assert source_world.events()[0]["email"] == "bare@example.com"


def test_urlencoded_body_is_accepted(source_world: SourceWorld) -> None:
    body = urlencode(fixture_fields()).encode()
    assert source_world.send(body, "application/x-www-form-urlencoded").status_code == 202
    assert source_world.events()[0]["delivery_id"] == SUBMISSION_ID


def test_redelivery_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("jotform", "submission").status_code == 202
    again = source_world.send_fixture("jotform", "submission")
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


@pytest.mark.parametrize(
    "place",
    [
        {"url": f"/webhooks/src?token={OTHER_TOKEN}"},
        {"url": "/webhooks/src", "headers": {"X-Consent-Relay-Token": TOKEN}},
    ],
    ids=["rotated-query", "header"],
)
def test_token_in_any_accepted_place(source_world: SourceWorld, place: dict[str, Any]) -> None:
    body, content_type = multipart(fixture_fields())
    headers = {"Content-Type": content_type, **place.get("headers", {})}
    assert source_world.post(place["url"], body, headers).status_code == 202


def test_wrong_token_is_refused_without_echoing_it(source_world: SourceWorld) -> None:
    body, content_type = multipart(fixture_fields())
    response = source_world.post(
        "/webhooks/src?token=guessed-token", body, {"Content-Type": content_type}
    )
    assert response.status_code == 401
    assert response.get_json()["detail"] == "Token does not match an active secret."
    assert "guessed-token" not in response.get_data(as_text=True)
    assert source_world.events() == []


def test_missing_token_is_refused(source_world: SourceWorld) -> None:
    body, content_type = multipart(fixture_fields())
    response = source_world.post("/webhooks/src", body, {"Content-Type": content_type})
    assert response.status_code == 401
    assert "Missing token" in response.get_json()["detail"]


def test_json_body_is_a_415(source_world: SourceWorld) -> None:
    response = source_world.send(b'{"submissionID": "1"}', "application/json")
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"rawRequest": "{not json"}, "malformed-json"),
        ({"rawRequest": "[1, 2]"}, "malformed-body"),
        ({"rawRequest": None}, "malformed-body"),
        ({"submissionID": None}, "malformed-body"),
        ({"submissionID": ""}, "malformed-body"),
    ],
    ids=["raw-not-json", "raw-not-object", "no-raw", "no-submission-id", "empty-submission-id"],
)
def test_unreadable_submission_is_a_400(
    source_world: SourceWorld, change: dict[str, str | None], problem: str
) -> None:
    fields = fixture_fields()
    for key, value in change.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    response = send_fields(source_world, fields)
    assert response.status_code == 400
    assert response.get_json()["type"].endswith(problem)
    assert source_world.events() == [] and source_world.ignored() == []


@pytest.mark.parametrize(
    ("source_toml", "expected"),
    [
        (
            'kind = "jotform"\nsecrets = ["short-token"]\nsource = "j"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.secrets.0",
        ),
        (
            f'kind = "jotform"\nsecrets = ["{TOKEN}"]\nsource = "j"',
            "sources.src.mapping.consent: Required by kind 'jotform'.",
        ),
        (
            f'kind = "jotform"\nsecrets = ["{TOKEN}"]\nsource = "j:{{response_id}}"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.source: Unknown template field(s) ['response_id']",
        ),
        (
            f'kind = "jotform"\nsecrets = ["{TOKEN}"]\nsource = "j"\nusername = "u"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.username: Not used by kind 'jotform'.",
        ),
    ],
    ids=["short-token", "no-consent", "unknown-variable", "foreign-option"],
)
def test_jotform_config_errors_name_the_key(
    tmp_path: Path, source_toml: str, expected: str
) -> None:
    assert expected in config_error(tmp_path, source_toml)
