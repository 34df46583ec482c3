"""Webflow (docs/reference/sources/webflow.md): signature and millisecond timestamp, fixture ->
decision, and the failures."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from service.sources.base import Authenticated, InboundRequest, SignatureError
from service.sources.fixtures import load_fixture
from service.sources.webflow import signature, verify
from tests.helpers.source_world import SourceWorld, config_error, fixture_json

SECRET = "webflow-oauth-client-secret"
CONFIG = f"""
kind = "webflow"
secrets = ["{SECRET}"]
source = "webflow:{{form_name}}"

[sources.src.mapping]
consent = "Newsletter opt-in"
"""
VECTOR_BODY = b'{"triggerType":"form_submission","payload":{"id":"65a5d3c8f7e2b40012345678"}}'
VECTOR_MS = 1663849649733
VECTOR_SIGNATURE = "c70f2160cc153e77c7f7911465682e622ccfd81ae43c9e9b20b6a08b9f0c262a"


def fixture_payload() -> dict[str, Any]:
    return fixture_json("webflow", "form_submission")


def signed_headers(body: bytes, millis: int, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "x-webflow-timestamp": str(millis),
        "x-webflow-signature": signature(secret, millis, body),
    }


def test_self_computed_vector() -> None:
    # docs/reference/senders.md#test-vectors (self-computed from the documented algorithm).
    assert signature("client-secret", VECTOR_MS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_vector_verifies_at_its_own_time_with_any_active_secret() -> None:
    headers = {"x-webflow-timestamp": str(VECTOR_MS), "x-webflow-signature": VECTOR_SIGNATURE}
    now = VECTOR_MS / 1000 + 2
    assert verify(headers, VECTOR_BODY, ["old-secret", "client-secret"], 300, now) == VECTOR_MS
    with pytest.raises(SignatureError, match="No signature matches"):
        verify(headers, VECTOR_BODY, ["old-secret"], 300, now)


def test_vector_through_the_kind_uses_the_time_of_receipt(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG.replace(SECRET, "client-secret"))
    headers = {"x-webflow-timestamp": str(VECTOR_MS), "x-webflow-signature": VECTOR_SIGNATURE}
    received_at = VECTOR_MS / 1000 + 2
    request = InboundRequest(
        "POST", source_world.url, headers, {}, VECTOR_BODY, "application/json", {}, received_at
    )
    assert source_world.kind.authenticate(request) == Authenticated(timestamp=1663849649)
    late = InboundRequest(
        "POST",
        source_world.url,
        headers,
        {},
        VECTOR_BODY,
        "application/json",
        {},
        received_at + 300,
    )
    with pytest.raises(SignatureError, match="too old"):
        source_world.kind.authenticate(late)


def test_documented_example_becomes_a_granted_decision(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("webflow", "form_submission")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "zaphod@heartofgold.ai"
    assert event["decision"] == "granted"
    assert event["consent_source"] == "webflow:Contact Us"
    assert event["consent_source_id"] == "Contact Us:6321ca84df3949bfc6752327"
    assert event["delivery_id"] == "6321ca84df3949bfc6752327"
    assert event["occurred_at"] == dt.datetime(2022, 9, 14, 12, 35, 16, 117000, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("answer", "decision"),
    [(True, "granted"), (False, "denied"), ("on", "granted"), ("false", "denied")],
)
def test_checkbox_value_formats(source_world: SourceWorld, answer: object, decision: str) -> None:
    # The checkbox's value format is UNVERIFIED (docs/reference/sources/webflow.md#payload):
    # booleans, "true"/"false" and "on".
    payload = fixture_payload()
    payload["payload"]["data"]["Newsletter opt-in"] = answer
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["decision"] == decision


def test_capitalised_email_field_and_site_id_template(tmp_path: Path) -> None:
    config = CONFIG.replace('source = "webflow:{form_name}"', 'source = "wf-{site_id}"')
    source_world = SourceWorld(tmp_path, config)
    payload = fixture_payload()
    data = payload["payload"]["data"]
    data["Email"] = data.pop("email")
    assert source_world.send_json(payload).status_code == 202
    [event] = source_world.events()
    assert event["email"] == "zaphod@heartofgold.ai"
    assert event["consent_source"] == "wf-65427cf400e02b306eaa049c"


def test_mapped_email_field_replaces_the_default(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG + 'email = "Work e-mail"\n')
    payload = fixture_payload()
    payload["payload"]["data"]["Work e-mail"] = "ford@heartofgold.ai"
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["email"] == "ford@heartofgold.ai"


def test_form_id_template_without_form_id_is_ignored(tmp_path: Path) -> None:
    config = CONFIG.replace(
        "\n[sources.src.mapping]", 'source_id = "{form_id}"\n[sources.src.mapping]'
    )
    source_world = SourceWorld(tmp_path, config)
    response = source_world.send_fixture("webflow", "form_submission")
    assert response.status_code == 200
    assert "needs form_id, absent here" in response.get_json()["reason"]
    payload = fixture_payload()
    payload["payload"]["formId"] = "6321ca84df3949bfc6752300"
    payload["payload"]["id"] = "6321ca84df3949bfc6752399"
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["consent_source_id"] == "6321ca84df3949bfc6752300"


def test_redelivery_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("webflow", "form_submission").status_code == 202
    # A retry is signed again with a new timestamp; the submission id is the same.
    again = source_world.send_fixture("webflow", "form_submission", now=time.time() + 1)
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


def test_missing_consent_answer_is_ignored_with_its_reason(source_world: SourceWorld) -> None:
    payload = fixture_payload()
    del payload["payload"]["data"]["Newsletter opt-in"]
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No consent answer in 'Newsletter opt-in'."


def test_wrong_secret_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("webflow", "form_submission")
    headers = signed_headers(body, int(time.time() * 1000), secret="not-the-secret")
    response = source_world.post("/webhooks/src", body, headers)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "No signature matches an active secret."
    assert source_world.events() == []


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("x-webflow-signature", "Missing x-webflow-signature header"),
        ("x-webflow-timestamp", "Missing x-webflow-timestamp header"),
    ],
)
def test_missing_header_is_refused(source_world: SourceWorld, header: str, message: str) -> None:
    body, _ = load_fixture("webflow", "form_submission")
    headers = signed_headers(body, int(time.time() * 1000))
    del headers[header]
    response = source_world.post("/webhooks/src", body, headers)
    assert response.status_code == 401
    assert message in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("offset_seconds", "message"),
    [(-301, "Message timestamp too old."), (301, "Message timestamp too new.")],
    ids=["stale", "future"],
)
def test_timestamp_outside_tolerance_is_refused(
    source_world: SourceWorld, offset_seconds: int, message: str
) -> None:
    response = source_world.send_fixture(
        "webflow", "form_submission", now=time.time() + offset_seconds
    )
    assert response.status_code == 401
    assert response.get_json()["detail"] == message


def test_seconds_timestamp_is_refused_as_too_old(source_world: SourceWorld) -> None:
    # Webflow's timestamp is in milliseconds (docs/reference/sources/webflow.md#replay); a seconds
    # value reads as January 1970.
    body, _ = load_fixture("webflow", "form_submission")
    headers = signed_headers(body, int(time.time()))
    assert source_world.post("/webhooks/src", body, headers).get_json()["detail"] == (
        "Message timestamp too old."
    )


@pytest.mark.parametrize("value", ["1663849649733.5", "-1663849649733", "abc", "1" * 17])
def test_malformed_timestamp_is_refused(value: str) -> None:
    headers = {"x-webflow-timestamp": value, "x-webflow-signature": VECTOR_SIGNATURE}
    with pytest.raises(SignatureError, match="Malformed x-webflow-timestamp"):
        verify(headers, VECTOR_BODY, ["client-secret"], 300, VECTOR_MS / 1000)


def test_tampered_body_or_timestamp_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("webflow", "form_submission")
    millis = int(time.time() * 1000)
    forged = body.replace(b"zaphod@heartofgold.ai", b"mallory@heartofgold.ai")
    assert (
        source_world.post("/webhooks/src", forged, signed_headers(body, millis)).status_code == 401
    )
    moved = signed_headers(body, millis) | {"x-webflow-timestamp": str(millis + 1)}
    assert source_world.post("/webhooks/src", body, moved).status_code == 401
    assert source_world.events() == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"payload": {"id": "x"}}',
        b'{"triggerType": "form_submission", "payload": []}',
        b'{"triggerType": "form_submission", "payload": {"name": "Contact Us"}}',
    ],
    ids=["not-json", "not-an-object", "no-trigger", "payload-not-an-object", "no-id"],
)
def test_malformed_body_is_a_400(source_world: SourceWorld, body: bytes) -> None:
    assert source_world.send(body).status_code == 400


@pytest.mark.parametrize(
    ("body", "delivery_id", "reason"),
    [
        (
            b'{"triggerType":"site_publish","payload":{"siteId":"65427cf400e02b306eaa049c"}}',
            None,
            "Not a form submission",
        ),
        (
            b'{"triggerType":"collection_item_created","payload":{"id":"item_1"}}',
            "item_1",
            "Not a form submission",
        ),
        (
            b'{"triggerType":"brand_new_trigger","payload":{"id":"evt_2"}}',
            "evt_2",
            "'brand_new_trigger' is not handled by the webflow source",
        ),
    ],
    ids=["site-publish", "collection-item", "unknown"],
)
def test_other_triggers_are_ignored(
    source_world: SourceWorld, body: bytes, delivery_id: str | None, reason: str
) -> None:
    response = source_world.send(body)
    assert response.status_code == 200
    assert reason in response.get_json()["reason"]
    [ignored] = source_world.ignored()
    if delivery_id is None:  # no payload.id: the body's digest recognises a redelivery
        assert ignored["delivery_id"].startswith("sha256:")
    else:
        assert ignored["delivery_id"] == delivery_id
    assert source_world.events() == []


def test_parse_offers_data_fields_and_variables(source_world: SourceWorld) -> None:
    body, content_type = load_fixture("webflow", "form_submission")
    request = InboundRequest("POST", source_world.url, {}, {}, body, content_type)
    [event] = source_world.kind.parse(request, Authenticated())
    assert event.answers["First Name"] == "Zaphod"
    assert event.answers["Phone Number"] == 15550000000
    assert event.email == "zaphod@heartofgold.ai"
    assert event.variables == {
        "form_name": "Contact Us",
        "site_id": "65427cf400e02b306eaa049c",
        "submission_id": "6321ca84df3949bfc6752327",
        "form_id": None,
    }


@pytest.mark.parametrize(
    ("source_toml", "expected"),
    [
        (
            'kind = "webflow"\nsecrets = ["short"]\nsource = "w"\n'
            '[sources.src.mapping]\nconsent = "c"',
            "sources.src.secrets.0: Secret must be at least 6 characters.",
        ),
        (
            f'kind = "webflow"\nsecrets = ["{SECRET}"]\nsource = "w"',
            "sources.src.mapping.consent: Required by kind 'webflow'.",
        ),
        (
            f'kind = "webflow"\nsecrets = ["{SECRET}"]\nsource = "w"\n'
            'source_id = "{response_id}"\n[sources.src.mapping]\nconsent = "c"',
            "sources.src.source_id: Unknown template field(s) ['response_id']",
        ),
        (
            f'kind = "webflow"\nsecrets = ["{SECRET}"]\nsource = "w"\n'
            'url = "https://relay.example.com/webhooks/src"\n[sources.src.mapping]\nconsent = "c"',
            "sources.src.url: Not used by kind 'webflow'.",
        ),
    ],
    ids=["short-secret", "no-consent", "unknown-variable", "foreign-option"],
)
def test_webflow_config_errors_name_the_key(
    tmp_path: Path, source_toml: str, expected: str
) -> None:
    assert expected in config_error(tmp_path, source_toml)
