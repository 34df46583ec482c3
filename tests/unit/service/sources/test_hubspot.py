"""HubSpot (docs/reference/sources/hubspot.md#workflow-webhooks,
docs/reference/sources/hubspot.md#webhooks-api): signatures v1/v2/v3 and their docs vectors,
workflow contacts -> decisions, Webhooks API events -> ignored with reasons, and the failures."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from service.sources.base import SignatureError
from service.sources.fixtures import load_fixture
from service.sources.hubspot_signature import (
    SignedParts,
    decode_v3_uri,
    signature_v1,
    signature_v2,
    signature_v3,
    signed_headers,
    verify,
)
from tests.helpers.source_world import SourceWorld, config_error, fixture_json

SECRET = "hubspot-client-secret-0000"
CONFIG = f"""
kind = "hubspot"
secrets = ["{SECRET}"]
source = "hubspot:{{portal_id}}"

[sources.src.mapping]
consent = "tracking_consent"
"""
URL = "http://relay.example.com/webhooks/src"
JSON = {"Content-Type": "application/json"}

# docs/reference/senders.md#test-vectors (docs vectors, HubSpot docs and HubSpot/hubspot-api-python
# tests).
DOCS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
DOCS_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
SDK_BODY = b"{'example_field':'example_value'}"
SDK_URI = "https://www.example.com/webhook_uri"


def workflow_contact() -> dict:
    return fixture_json("hubspot", "workflow_contact")


def v3_headers(body: bytes, *, secret: str = SECRET, url: str = URL, now: float | None = None):
    parts = SignedParts("POST", url, body)
    return {**JSON, **signed_headers(secret, "v3", parts, time.time() if now is None else now)}


# --- the docs vectors ---------------------------------------------------------------------


def test_docs_vector_v1() -> None:
    expected = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    assert signature_v1(DOCS_SECRET, DOCS_BODY) == expected


def test_docs_vector_v2_get_without_body() -> None:
    expected = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    assert signature_v2(DOCS_SECRET, "GET", SDK_URI, b"") == expected


def test_sdk_vector_v1() -> None:
    expected = "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
    assert signature_v1(DOCS_SECRET, SDK_BODY) == expected


def test_sdk_vector_v2() -> None:
    expected = "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
    assert signature_v2(DOCS_SECRET, "POST", SDK_URI, SDK_BODY) == expected


def test_sdk_vector_v3() -> None:
    expected = "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
    assert signature_v3(DOCS_SECRET, "POST", SDK_URI, SDK_BODY, "15000000") == expected


def test_sdk_vector_v3_verifies_at_its_own_time() -> None:
    headers = {
        "x-hubspot-signature-v3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
        "x-hubspot-request-timestamp": "15000000",  # milliseconds: 15000 s after the epoch
    }
    parts = SignedParts("POST", SDK_URI, SDK_BODY)
    assert (
        verify(headers, parts, ["other-secret", DOCS_SECRET], ["v3"], 300, now=15_100) == 15000000
    )
    with pytest.raises(SignatureError, match="too old"):
        verify(headers, parts, [DOCS_SECRET], ["v3"], 300, now=15_301)


def test_docs_vector_v1_verifies_with_rotation() -> None:
    headers = {
        "x-hubspot-signature": "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
        "x-hubspot-signature-version": "v1",
    }
    parts = SignedParts("POST", SDK_URI, DOCS_BODY)
    assert verify(headers, parts, ["new-secret-abc", DOCS_SECRET], ["v1"], 300, 0) is None


def test_v3_uri_decoding_table() -> None:
    uri = "https://relay.example.com/webhooks/src?next=%2Fa%3Fb%40c%21%24%27%28%29%2a%2C%3B%3a"
    assert decode_v3_uri(uri) == "https://relay.example.com/webhooks/src?next=/a?b@c!$'()*,;:"
    assert decode_v3_uri("https://x.example/?q=a%20b%26c") == "https://x.example/?q=a%20b%26c"


@pytest.mark.parametrize("signed_uri", ["decoded", "as-received"])
def test_v3_over_an_encoded_url_is_accepted_either_way(signed_uri: str) -> None:
    # UNVERIFIED (docs/reference/sources/hubspot.md#signatures): HubSpot's decode table; the SDK
    # decodes nothing.
    uri = "https://relay.example.com/webhooks/src?return=%2Fthanks"
    signed = decode_v3_uri(uri) if signed_uri == "decoded" else uri
    headers = {
        "x-hubspot-signature-v3": signature_v3(SECRET, "POST", signed, b"{}", "1700000000000"),
        "x-hubspot-request-timestamp": "1700000000000",
    }
    parts = SignedParts("POST", uri, b"{}")
    assert verify(headers, parts, [SECRET], ["v3"], 300, now=1_700_000_000) == 1700000000000


# --- workflow contacts (docs/reference/sources/hubspot.md#workflow-webhooks) -> decisions
# ---------------------------------------------------


def test_workflow_contact_becomes_a_granted_decision(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("hubspot", "workflow_contact")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "perf_user_970@test.com"
    assert event["decision"] == "granted"
    assert event["consent_source"] == "hubspot:62515"
    assert event["consent_source_id"] == "71:consent-1325633423000"
    assert event["delivery_id"] == "vid:71:consent-1325633423000"
    assert event["occurred_at"] == dt.datetime(2012, 1, 3, 23, 30, 23, tzinfo=dt.UTC)


def test_workflow_redelivery_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("hubspot", "workflow_contact").status_code == 202
    again = source_world.send_fixture("hubspot", "workflow_contact")
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


def test_later_consent_change_with_the_same_form_submission_is_new(
    source_world: SourceWorld,
) -> None:
    # The latest form conversion-id is unchanged: keying on it would lose this withdrawal.
    assert source_world.send_fixture("hubspot", "workflow_contact").status_code == 202
    contact = workflow_contact()
    consent = contact["properties"]["tracking_consent"]
    consent["value"] = "false"
    consent["versions"].insert(
        0, {"value": "false", "source-type": "CRM_UI", "timestamp": 1400000000000}
    )
    assert source_world.send_json(contact).status_code == 202
    later = source_world.events()[1]
    assert (later["decision"], later["delivery_id"]) == ("denied", "vid:71:consent-1400000000000")
    assert later["occurred_at"] == dt.datetime(2014, 5, 13, 16, 53, 20, tzinfo=dt.UTC)


def test_flat_workflow_contact_uses_lastmodifieddate(source_world: SourceWorld) -> None:
    contact = {
        "objectId": 512,
        "portalId": 62515,
        "properties": {
            "email": "flat@example.com",
            "tracking_consent": "false",
            "lastmodifieddate": "2024-03-01T10:00:00.000Z",
        },
    }
    assert source_world.send_json(contact).status_code == 202
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("flat@example.com", "denied")
    assert event["delivery_id"] == "vid:512:modified-2024-03-01T10:00:00.000Z"
    assert event["consent_source"] == "hubspot:62515"
    assert event["occurred_at"] == dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)


def test_workflow_contact_without_consent_property_is_ignored(source_world: SourceWorld) -> None:
    contact = workflow_contact()
    del contact["properties"]["tracking_consent"]
    response = source_world.send_json(contact)
    assert response.status_code == 200
    assert response.get_json()["reason"] == "No consent answer in 'tracking_consent'."
    assert source_world.ignored()[0]["delivery_id"] == "vid:71:modified-1325633425000"


def test_object_without_a_contact_id_is_ignored(source_world: SourceWorld) -> None:
    response = source_world.send(b'{"email": "someone@example.com", "tracking_consent": "true"}')
    assert response.status_code == 200
    assert "vid or objectId" in response.get_json()["reason"]
    assert source_world.ignored()[0]["delivery_id"].startswith("sha256:")


# --- Webhooks API events (docs/reference/sources/hubspot.md#webhooks-api) -> ignored with reasons
# ---------------------------------------


def test_webhooks_api_events_are_ignored_each_with_its_reason(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("hubspot", "property_change")

    assert response.status_code == 200
    consent, other, creation = response.get_json()["events"]
    assert consent["id"] == "1912000001"
    assert "carries no e-mail address (only objectId 123)" in consent["reason"]
    assert "workflow 'Send a webhook'" in consent["reason"]
    assert other["reason"] == (
        "Property 'lifecyclestage' is not the mapped consent property 'tracking_consent'."
    )
    assert creation["id"] == "1"
    assert "contact.creation event carries neither" in creation["reason"]
    assert source_world.events() == []
    assert [row["event_type"] for row in source_world.ignored()] == [
        "contact.propertyChange",
        "contact.propertyChange",
        "contact.creation",
    ]


def test_unsupported_subscription_type_is_ignored(source_world: SourceWorld) -> None:
    body = b'[{"eventId":77,"subscriptionType":"deal.creation","objectId":9,"portalId":1}]'
    response = source_world.send(body)
    assert response.status_code == 200
    assert response.get_json()["reason"] == (
        "Event type 'deal.creation' is not handled by the hubspot source."
    )
    assert source_world.ignored()[0]["delivery_id"] == "77"


def test_event_without_event_id_is_ignored_not_refused(source_world: SourceWorld) -> None:
    response = source_world.send(b'[{"subscriptionType":"contact.creation"}]')
    assert response.status_code == 200
    assert "without an eventId" in response.get_json()["reason"]


# --- signature versions, URL and the failures ---------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v1_and_v2_signed_deliveries_are_accepted(source_world: SourceWorld, version: str) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    headers = {**JSON, **signed_headers(SECRET, version, SignedParts("POST", URL, body), 0)}
    assert source_world.post(URL, body, headers).status_code == 202


def test_configured_url_is_what_v3_signs(tmp_path: Path) -> None:
    public = "https://consent.example.org/hooks/hubspot?portal=62515"
    source_world = SourceWorld(
        tmp_path, CONFIG.replace('source = "', f'url = "{public}"\nsource = "')
    )
    body, _ = load_fixture("hubspot", "workflow_contact")
    assert source_world.post(URL, body, v3_headers(body, url=URL)).status_code == 401
    assert source_world.post(URL, body, v3_headers(body, url=public)).status_code == 202
    again = source_world.send(body)  # sign() signs the configured URL too: a recognised redelivery
    assert (again.status_code, again.get_json()["duplicate"]) == (200, True)


def test_signature_versions_restrict_what_is_accepted(tmp_path: Path) -> None:
    source_world = SourceWorld(
        tmp_path, CONFIG.replace('source = "', 'signature_versions = ["v3"]\nsource = "')
    )
    body, _ = load_fixture("hubspot", "workflow_contact")
    v1 = {**JSON, **signed_headers(SECRET, "v1", SignedParts("POST", URL, body), 0)}
    response = source_world.post(URL, body, v1)
    assert response.status_code == 401
    assert "v1 is not accepted" in response.get_json()["detail"]
    assert source_world.send(body).status_code == 202


def test_failed_v3_does_not_fall_back_to_v1(source_world: SourceWorld) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    headers = {
        **v3_headers(body, secret="wrong-secret"),
        **signed_headers(SECRET, "v1", SignedParts("POST", URL, body), 0),
    }
    response = source_world.post(URL, body, headers)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "No v3 signature matches an active secret."


def test_wrong_secret_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    assert (
        source_world.post(URL, body, v3_headers(body, secret="not-the-secret")).status_code == 401
    )
    assert source_world.events() == []


def test_missing_signature_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    response = source_world.post(URL, body, JSON)
    assert response.status_code == 401
    assert "Missing X-HubSpot-Signature-v3 or X-HubSpot-Signature" in response.get_json()["detail"]


def test_missing_version_header_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    headers = {**JSON, "X-HubSpot-Signature": signature_v1(SECRET, body)}
    response = source_world.post(URL, body, headers)
    assert response.status_code == 401
    assert "X-HubSpot-Signature-Version" in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("offset", "message"), [(-301, "too old"), (301, "too new")], ids=["stale", "future"]
)
def test_timestamp_outside_tolerance_is_refused(
    source_world: SourceWorld, offset: int, message: str
) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    response = source_world.post(URL, body, v3_headers(body, now=time.time() + offset))
    assert response.status_code == 401
    assert message in response.get_json()["detail"]


def test_timestamp_in_seconds_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    seconds = str(int(time.time()))
    headers = {
        **JSON,
        "X-HubSpot-Signature-v3": signature_v3(SECRET, "POST", URL, body, seconds),
        "X-HubSpot-Request-Timestamp": seconds,
    }
    assert source_world.post(URL, body, headers).status_code == 401


def test_tampered_body_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("hubspot", "workflow_contact")
    headers = v3_headers(body)
    forged = body.replace(b"perf_user_970@test.com", b"mallory@example.com")
    assert source_world.post(URL, forged, headers).status_code == 401


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'"a string"', b"42"],
    ids=["not-json", "empty", "string", "number"],
)
def test_malformed_body_is_a_400(source_world: SourceWorld, body: bytes) -> None:
    assert source_world.send(body).status_code == 400


def test_non_json_body_is_a_415(source_world: SourceWorld) -> None:
    assert (
        source_world.send(b"email=a@example.com", "application/x-www-form-urlencoded").status_code
        == 415
    )


# --- config -------------------------------------------------------------------------------


def test_unknown_signature_version_is_a_config_error(tmp_path: Path) -> None:
    toml = CONFIG.replace('source = "', 'signature_versions = ["v4"]\nsource = "')
    assert "sources.src.signature_versions" in config_error(tmp_path, toml)


def test_organization_ids_are_not_a_hubspot_option(tmp_path: Path) -> None:
    toml = CONFIG.replace('source = "', 'organization_ids = ["00D7F00000107Xs"]\nsource = "')
    assert "sources.src.organization_ids" in config_error(tmp_path, toml)


def test_unknown_template_variable_is_a_config_error(tmp_path: Path) -> None:
    toml = CONFIG.replace('source = "hubspot:{portal_id}"', 'source = "hubspot:{form_title}"')
    message = config_error(tmp_path, toml)
    assert "sources.src.source" in message
    assert "form_title" in message
