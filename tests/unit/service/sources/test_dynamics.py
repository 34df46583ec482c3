"""Dynamics 365 / Dataverse (docs/reference/sources/dynamics.md): shared key, RemoteExecutionContext
fixtures -> decisions, duplicates, and the failures."""

from __future__ import annotations

import codecs
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from service.sources.dynamics import EMPTY_GUID, _unwrap, _wcf_time
from service.sources.fixtures import load_fixture
from tests.helpers.source_world import SourceWorld, config_error, fixture_json

KEY = "dataverse-webhook-key-0123456789abcdef"
OTHER_KEY = "dataverse-webhook-key-rotated-fedcba987"
CONTACT_ID = "6d81597f-0f9f-e711-8122-000d3aa2331c"
CONFIG = f"""
kind = "dynamics"
secrets = ["{KEY}", "{OTHER_KEY}"]
source = "dynamics:{{organization_name}}"

[sources.src.mapping]
consent = "donotbulkemail"
values = {{ "true" = "withdrawn", "false" = "granted" }}
"""


def keyed(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", **(headers or {})}


def test_contact_update_opting_out_is_a_withdrawal(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("dynamics", "contact_update")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "james.glynn@example.com"  # from the post-image
    # Target (the change) says donotbulkemail = true; the image's stale false loses.
    assert event["decision"] == "withdrawn"
    assert event["consent_source"] == "dynamics:OrgName"
    assert event["consent_source_id"] == f"contact:{CONTACT_ID}"
    assert event["delivery_id"] == "4af10637-4ea2-e711-8122-000d3aa2331c"
    # /Date(1506409448000-0700)/: UTC milliseconds; the offset is for display only.
    assert event["occurred_at"] == dt.datetime(2017, 9, 26, 7, 4, 8, tzinfo=dt.UTC)


def test_lead_create_is_granted(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("dynamics", "lead_create").status_code == 202
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("ana.costa@example.com", "granted")
    assert event["consent_source_id"] == "lead:8f1c3a55-1b2c-ef11-8409-000d3a9b1c2d"
    assert event["delivery_id"] == "a8f2e7c1-2b2c-ef11-8409-000d3a9b1c2d"
    assert event["occurred_at"] == dt.datetime(2024, 6, 3, 9, 0, 1, tzinfo=dt.UTC)


def test_formatted_labels_are_locators(tmp_path: Path) -> None:
    config = CONFIG.replace('"donotbulkemail"', '"formatted.donotbulkemail"').replace(
        '{ "true" = "withdrawn", "false" = "granted" }',
        '{ "Allow" = "granted", "Do Not Allow" = "withdrawn" }',
    )
    source_world = SourceWorld(tmp_path, config)
    assert source_world.send_fixture("dynamics", "contact_update").status_code == 202
    assert source_world.send_fixture("dynamics", "lead_create").status_code == 202
    assert [e["decision"] for e in source_world.events()] == ["withdrawn", "granted"]


def test_option_set_values_are_unwrapped(tmp_path: Path) -> None:
    config = CONFIG.replace('"donotbulkemail"', '"preferredcontactmethodcode"').replace(
        '{ "true" = "withdrawn", "false" = "granted" }', '{ "2" = "granted" }'
    )
    source_world = SourceWorld(tmp_path, config)
    assert source_world.send_fixture("dynamics", "contact_update").status_code == 202
    assert source_world.events()[0]["decision"] == "granted"


def test_wrapped_values_are_unwrapped() -> None:
    money = {"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 12.5}
    reference = {"__type": "EntityReference:...", "Id": CONTACT_ID, "LogicalName": "contact"}
    assert _unwrap(money) == 12.5
    assert _unwrap([{"Value": 1}, {"Value": 3}]) == [1, 3]  # a multi-select column
    assert _unwrap(reference) == reference  # never taken for an answer by the mapping
    assert _unwrap(True) is True


def test_redelivery_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("dynamics", "contact_update").status_code == 202
    again = source_world.send_fixture("dynamics", "contact_update")
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


def synchronous(payload: dict[str, Any], record: str) -> dict[str, Any]:
    """A synchronous step has no System Job: OperationId is the empty GUID (UNVERIFIED)."""
    payload = dict(payload, OperationId=EMPTY_GUID, PrimaryEntityId=record, Mode=0)
    return payload


def test_synchronous_steps_fall_back_to_correlation_message_record_time(
    source_world: SourceWorld,
) -> None:
    first = synchronous(fixture_json("dynamics", "contact_update"), CONTACT_ID)
    other = synchronous(
        fixture_json("dynamics", "contact_update"), "11111111-0f9f-e711-8122-000d3aa2331c"
    )
    assert source_world.send_json(first).status_code == 202
    assert source_world.send_json(other).status_code == 202  # same CorrelationId, other record
    again = source_world.send_json(first)
    assert again.get_json()["duplicate"] is True
    assert [e["delivery_id"] for e in source_world.events()] == [
        f"b374239d-4233-41a9-8b17-a86cb4f737b5:Update:{CONTACT_ID}:/Date(1506409448000-0700)/",
        "b374239d-4233-41a9-8b17-a86cb4f737b5:Update:11111111-0f9f-e711-8122-000d3aa2331c"
        ":/Date(1506409448000-0700)/",
    ]


@pytest.mark.parametrize(
    ("mutate", "event_type", "reason"),
    [
        (lambda p: p, "contact.Delete", "deleting is not a withdrawal"),
        (lambda p: dict(p, PrimaryEntityName="account"), "account.Delete", "not handled"),
    ],
    ids=["delete", "other-table"],
)
def test_other_messages_are_ignored_and_recorded(
    source_world: SourceWorld, mutate: Any, event_type: str, reason: str
) -> None:
    response = source_world.send_json(mutate(fixture_json("dynamics", "contact_delete")))
    assert response.status_code == 200
    assert reason in response.get_json()["reason"]
    [ignored] = source_world.ignored()
    assert (ignored["event_type"], ignored["delivery_id"]) == (
        event_type,
        "c3e0a1d2-4ea2-e711-8122-000d3aa2331c",
    )


def test_pre_operation_step_is_ignored(source_world: SourceWorld) -> None:
    payload = dict(fixture_json("dynamics", "contact_update"), Stage=20)
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert "PreOperation step" in response.get_json()["reason"]
    assert source_world.events() == []


def oversized(payload: dict[str, Any]) -> dict[str, Any]:
    """What Dataverse sends over 256 KB: no parameters, no images (use-webhooks.md)."""
    trimmed = {k: v for k, v in payload.items() if not k.endswith(("Parameters", "Images"))}
    return {k: v for k, v in trimmed.items() if k != "ParentContext"}


def test_oversized_context_without_the_address_is_ignored_with_the_reason(
    source_world: SourceWorld,
) -> None:
    body = json.dumps(oversized(fixture_json("dynamics", "contact_update"))).encode()
    headers = keyed({"x-ms-dynamics-msg-size-exceeded": "true"})
    response = source_world.post(f"/webhooks/src?code={KEY}", body, headers)
    assert response.status_code == 200
    assert "x-ms-dynamics-msg-size-exceeded" in response.get_json()["reason"]
    assert source_world.ignored()[0]["event_type"] == "contact.Update"


def test_oversized_header_with_the_address_present_is_accepted(source_world: SourceWorld) -> None:
    body, _ = load_fixture("dynamics", "lead_create")
    headers = keyed({"x-ms-dynamics-msg-size-exceeded": "true"})
    assert source_world.post(f"/webhooks/src?code={KEY}", body, headers).status_code == 202


def test_no_address_is_ignored(source_world: SourceWorld) -> None:
    payload = fixture_json("dynamics", "contact_update")
    payload["PostEntityImages"] = []
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No e-mail address in the e-mail field."


def test_sign_uses_the_webhook_key_query(source_world: SourceWorld) -> None:
    signed = source_world.kind.sign(b"{}", "application/json", source_world.url, 0.0)
    assert signed.url == f"{source_world.url}?code={KEY}"


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        (f"/webhooks/src?code={OTHER_KEY}", {}),
        ("/webhooks/src", {"X-Consent-Relay-Token": KEY}),
        ("/webhooks/src", {"Authorization": f"Bearer {KEY}"}),
    ],
    ids=["rotated-webhook-key", "http-header", "bearer"],
)
def test_key_in_any_registered_place(
    source_world: SourceWorld, url: str, headers: dict[str, str]
) -> None:
    body, _ = load_fixture("dynamics", "contact_update")
    assert source_world.post(url, body, keyed(headers)).status_code == 202


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("/webhooks/src?code=not-the-key", "Token does not match an active secret."),
        ("/webhooks/src", "Missing token (query `token`, X-Consent-Relay-Token or Bearer)."),
    ],
    ids=["wrong-key", "missing-key"],
)
def test_bad_key_is_refused(source_world: SourceWorld, url: str, detail: str) -> None:
    body, _ = load_fixture("dynamics", "contact_update")
    response = source_world.post(url, body, keyed())
    assert response.status_code == 401
    assert response.get_json()["detail"] == detail
    assert source_world.events() == [] and source_world.ignored() == []


def test_byte_order_mark_is_tolerated(source_world: SourceWorld) -> None:
    body, _ = load_fixture("dynamics", "lead_create")
    assert source_world.send(codecs.BOM_UTF8 + body).status_code == 202


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "malformed-json"),
        (b"[]", "malformed-body"),
        (b'{"MessageName": "Update", "PrimaryEntityName": "contact"}', "malformed-body"),
    ],
    ids=["not-json", "not-an-object", "no-operation-or-correlation-id"],
)
def test_unreadable_body_is_a_400(source_world: SourceWorld, body: bytes, problem: str) -> None:
    response = source_world.send(body)
    assert response.status_code == 400
    assert response.get_json()["type"].endswith(problem)


def test_non_json_body_is_a_415(source_world: SourceWorld) -> None:
    assert source_world.send(b"<xml/>", "text/xml").status_code == 415


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/Date(1506409448000-0700)/", dt.datetime(2017, 9, 26, 7, 4, 8, tzinfo=dt.UTC)),
        ("/Date(1506409448000)/", dt.datetime(2017, 9, 26, 7, 4, 8, tzinfo=dt.UTC)),
        ("2017-09-26T07:04:08Z", dt.datetime(2017, 9, 26, 7, 4, 8, tzinfo=dt.UTC)),
        ("/Date(not-a-number)/", None),
        (None, None),
    ],
)
def test_operation_created_on(value: Any, expected: dt.datetime | None) -> None:
    assert _wcf_time(value) == expected


def test_escaped_slashes_as_in_the_documented_example(source_world: SourceWorld) -> None:
    body, _ = load_fixture("dynamics", "contact_update")
    escaped = body.replace(b'"/Date(', b'"\\/Date(').replace(b')/"', b')\\/"')
    assert b"\\/Date(1506409448000-0700)\\/" in escaped
    assert source_world.send(escaped).status_code == 202
    assert source_world.events()[0]["occurred_at"] == dt.datetime(
        2017, 9, 26, 7, 4, 8, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("source_toml", "expected"),
    [
        (
            'kind = "dynamics"\nsecrets = ["short-key"]\nsource = "d"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.secrets.0",
        ),
        (
            f'kind = "dynamics"\nsecrets = ["{KEY}"]\nsource = "d"',
            "sources.src.mapping.consent: Required by kind 'dynamics'.",
        ),
        (
            f'kind = "dynamics"\nsecrets = ["{KEY}"]\nsource = "d"\nsource_id = "{{contact_id}}"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.source_id: Unknown template field(s) ['contact_id']",
        ),
        (
            f'kind = "dynamics"\nsecrets = ["{KEY}"]\nsource = "d"\nusername = "u"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.username: Not used by kind 'dynamics'.",
        ),
    ],
    ids=["short-key", "no-consent", "unknown-variable", "foreign-option"],
)
def test_dynamics_config_errors_name_the_key(
    tmp_path: Path, source_toml: str, expected: str
) -> None:
    assert expected in config_error(tmp_path, source_toml)
