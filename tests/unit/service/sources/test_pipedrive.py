"""Pipedrive (docs/reference/sources/pipedrive.md): Basic auth, v2 and v1 fixtures -> decisions,
failures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from service.sources.fixtures import load_fixture
from service.sources.pipedrive import _custom_value, _primary_email
from tests.helpers.source_world import SourceWorld, basic_auth, config_error, fixture_json

USERNAME = "pipedrive-hook"
PASSWORD = "pipedrive-basic-password-1"
OTHER_PASSWORD = "pipedrive-basic-password-2"
CONSENT_FIELD = "5c1f0ab2e4d3c1b7a9f8e6d5c4b3a2f1e0d9c8b7"  # a person custom field (enum)
CONFIG = f"""
kind = "pipedrive"
secrets = ["{PASSWORD}", "{OTHER_PASSWORD}"]
username = "{USERNAME}"
source = "pipedrive:{{company_id}}"

[sources.src.mapping]
consent = "{CONSENT_FIELD}"
values = {{ "42" = "granted", "43" = "withdrawn" }}
"""
MARKETING_CONFIG = CONFIG.replace(f'consent = "{CONSENT_FIELD}"', 'consent = "marketing_status"')
MARKETING_CONFIG = MARKETING_CONFIG.replace(
    '{ "42" = "granted", "43" = "withdrawn" }',
    '{ subscribed = "granted", unsubscribed = "withdrawn", no_consent = "denied" }',
)
V1_EVENT_ID = "v1:4710828:updated.person:11:1739827618595189"


def test_v2_create_person_becomes_a_granted_decision(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("pipedrive", "create_person")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "sample.person@example.com"  # the primary one, listed second
    assert event["decision"] == "granted"
    assert event["consent_source"] == "pipedrive:8087566"
    assert event["consent_source_id"] == "person:8"
    assert event["delivery_id"] == "5359a602-6d1b-4562-a385-ccaa762bd722"
    assert event["occurred_at"] == dt.datetime(2022, 11, 24, 13, 18, 55, 665000, tzinfo=dt.UTC)


def test_v2_change_person_becomes_a_withdrawal(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("pipedrive", "change_person").status_code == 202
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("sample.person@example.com", "withdrawn")
    assert event["delivery_id"] == "7c812ffd-8f50-45ea-a597-b8fcba2da9c0"
    assert event["occurred_at"] == dt.datetime(2022, 11, 24, 15, 18, 35, 616000, tzinfo=dt.UTC)


def test_v1_updated_person_by_custom_field(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("pipedrive", "updated_person_v1").status_code == 202
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("person.name@example.com", "granted")
    assert event["consent_source_id"] == "person:11"
    # v1 meta.id is the person's id, so the event id is webhook + event + person + time.
    assert event["delivery_id"] == V1_EVENT_ID
    assert event["occurred_at"] == dt.datetime(2025, 2, 17, 21, 26, 58, 595000, tzinfo=dt.UTC)


def test_v1_updated_person_by_marketing_status(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, MARKETING_CONFIG)
    assert source_world.send_fixture("pipedrive", "updated_person_v1").status_code == 202
    assert source_world.events()[0]["decision"] == "granted"
    payload = fixture_json("pipedrive", "updated_person_v1")
    payload["current"]["marketing_status"] = "unsubscribed"
    payload["meta"]["timestamp_micro"] += 1_000_000
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[1]["decision"] == "withdrawn"


def test_v1_later_change_of_the_same_person_is_not_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("pipedrive", "updated_person_v1").status_code == 202
    payload = fixture_json("pipedrive", "updated_person_v1")
    payload["meta"]["timestamp_micro"] = 1739827700000000
    payload["current"][CONSENT_FIELD] = "43"
    assert source_world.send_json(payload).status_code == 202
    assert [e["decision"] for e in source_world.events()] == ["granted", "withdrawn"]


def test_v1_retry_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("pipedrive", "updated_person_v1").status_code == 202
    payload = fixture_json("pipedrive", "updated_person_v1")
    payload["retry"] = 1
    again = source_world.send_json(payload)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


def test_v2_retry_with_a_higher_attempt_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("pipedrive", "create_person").status_code == 202
    payload = fixture_json("pipedrive", "create_person")
    payload["meta"]["attempt"] = 2
    again = source_world.send_json(payload)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


@pytest.mark.parametrize(
    ("fixture", "event_type", "reason"),
    [
        ("delete_person", "delete.person", "deleting is not a withdrawal"),
        ("create_deal", "create.deal", "deal events are ignored"),
    ],
)
def test_other_events_are_ignored_and_recorded(
    source_world: SourceWorld, fixture: str, event_type: str, reason: str
) -> None:
    response = source_world.send_fixture("pipedrive", fixture)
    assert response.status_code == 200
    assert reason in response.get_json()["reason"]
    [ignored] = source_world.ignored()
    assert ignored["event_type"] == event_type
    assert source_world.events() == []


def test_unknown_event_type_is_ignored(source_world: SourceWorld) -> None:
    payload = fixture_json("pipedrive", "create_deal")
    payload["meta"]["entity"] = "project"
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert "not handled by the pipedrive source" in response.get_json()["reason"]


def test_person_without_an_address_is_ignored(source_world: SourceWorld) -> None:
    payload = fixture_json("pipedrive", "create_person")
    payload["data"]["emails"] = [{"label": "work", "value": "", "primary": True}]
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No e-mail address in the e-mail field."


def test_person_event_without_data_is_ignored(source_world: SourceWorld) -> None:
    payload = fixture_json("pipedrive", "create_person")
    payload["data"] = None
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert response.get_json()["reason"] == "The delivery has no person data."


def test_several_options_and_plain_values_are_unwrapped() -> None:
    assert _custom_value({"type": "enum", "id": 42}) == 42
    assert _custom_value({"type": "set", "values": [{"id": 13}, {"id": 42}]}) == [13, 42]
    assert _custom_value({"type": "varchar", "value": "yes"}) == "yes"
    assert _custom_value("42") == "42"


def test_a_multiple_option_field_is_mapped_by_any_option(source_world: SourceWorld) -> None:
    payload = fixture_json("pipedrive", "create_person")
    payload["data"]["custom_fields"][CONSENT_FIELD] = {"type": "set", "values": [{"id": 42}]}
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["decision"] == "granted"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            [{"value": "a@x.org", "primary": False}, {"value": "b@x.org", "primary": True}],
            "b@x.org",
        ),
        ([{"value": "", "primary": True}, {"value": "c@x.org", "primary": False}], "c@x.org"),
        ("d@x.org", "d@x.org"),
        ([], None),
        (None, None),
    ],
    ids=["primary-first", "empty-primary", "bare-string", "empty", "absent"],
)
def test_primary_email(entries: Any, expected: str | None) -> None:
    assert _primary_email(entries) == expected


def test_v2_key_emails_and_v1_key_email_are_both_read(source_world: SourceWorld) -> None:
    payload = fixture_json("pipedrive", "create_person")
    payload["data"]["email"] = payload["data"].pop("emails")
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["email"] == "sample.person@example.com"


def test_rotated_password_is_accepted(source_world: SourceWorld) -> None:
    body, _ = load_fixture("pipedrive", "create_person")
    headers = basic_auth(USERNAME, OTHER_PASSWORD)
    assert source_world.post("/webhooks/src", body, headers).status_code == 202


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        (basic_auth(USERNAME, "not-the-password-at-all"), "Basic credentials do not match."),
        (basic_auth("someone-else", PASSWORD), "Basic credentials do not match."),
        ({"Content-Type": "application/json"}, "Missing Basic authorization header."),
        (
            {"Content-Type": "application/json", "Authorization": f"Bearer {PASSWORD}"},
            "Missing Basic authorization header.",
        ),
        (
            {"Content-Type": "application/json", "Authorization": "Basic !!not-base64"},
            "Malformed Basic authorization header.",
        ),
    ],
    ids=["wrong-password", "wrong-user", "missing", "bearer", "malformed"],
)
def test_bad_credentials_are_refused(
    source_world: SourceWorld, headers: dict[str, str], detail: str
) -> None:
    body, _ = load_fixture("pipedrive", "create_person")
    response = source_world.post("/webhooks/src", body, headers)
    assert response.status_code == 401
    assert response.get_json()["detail"] == detail
    assert source_world.events() == [] and source_world.ignored() == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "malformed-json"),
        (b"[]", "malformed-body"),
        (b'{"data": {}}', "malformed-body"),
        (
            b'{"meta": {"action": "create", "entity": "person", "id": 7}, "data": {}}',
            "malformed-body",
        ),
        (
            b'{"v": 1, "meta": {"object": "person", "webhook_id": "1"}, "current": {}}',
            "malformed-body",
        ),
    ],
    ids=["not-json", "not-an-object", "no-meta", "v2-numeric-id", "v1-no-timestamp-micro"],
)
def test_unreadable_body_is_a_400(source_world: SourceWorld, body: bytes, problem: str) -> None:
    response = source_world.send(body)
    assert response.status_code == 400
    assert response.get_json()["type"].endswith(problem)


def test_form_body_is_a_415(source_world: SourceWorld) -> None:
    assert source_world.send(b"a=1", "application/x-www-form-urlencoded").status_code == 415


@pytest.mark.parametrize(
    ("source_toml", "expected"),
    [
        (
            f'kind = "pipedrive"\nsecrets = ["{PASSWORD}"]\nsource = "p"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.username: Required by kind 'pipedrive'.",
        ),
        (
            f'kind = "pipedrive"\nsecrets = ["short-pass"]\nusername = "{USERNAME}"\n'
            'source = "p"\n[sources.src.mapping]\nconsent = "c"',
            "sources.src.secrets.0",
        ),
        (
            f'kind = "pipedrive"\nsecrets = ["{PASSWORD}"]\nusername = "{USERNAME}"\nsource = "p"',
            "sources.src.mapping.consent: Required by kind 'pipedrive'.",
        ),
        (
            f'kind = "pipedrive"\nsecrets = ["{PASSWORD}"]\nusername = "{USERNAME}"\n'
            'source = "p:{deal_id}"\n[sources.src.mapping]\nconsent = "c"',
            "sources.src.source: Unknown template field(s) ['deal_id']",
        ),
    ],
    ids=["no-username", "short-password", "no-consent", "unknown-variable"],
)
def test_pipedrive_config_errors_name_the_key(
    tmp_path: Path, source_toml: str, expected: str
) -> None:
    assert expected in config_error(tmp_path, source_toml)
