"""The MoEngage client: answer classification, then real calls against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators import moengage
from emulators.server import EmulatorServer
from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from workers.destinations.errors import (
    AuthError,
    MisconfiguredError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
)
from workers.destinations.moengage import UNVERIFIED_NOTE, MoEngageClient, classify
from workers.destinations.toolkit import Verdict, Written

EMAIL = "Jane.Doe+tag@Example.com"
FIELDS = {
    "consent_field": "tracking_consent",
    "source_field": "tracking_consent_source",
    "source_id_field": "tracking_consent_source_id",
}
NOT_FOUND_BODY = (
    '{"error":{"code":"400 Bad Request","message":"Request Data is invalid","details":'
    '{"target":"customer_id or email_id","message":"No users found with the provided '
    'customer_id or email_id. Please check the same."}}}'
)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    options = getattr(request, "param", {})
    with EmulatorServer(moengage.create_emulator_app(**options)) as running:
        yield running


def client(
    server: EmulatorServer, api_key: str = moengage.API_KEY, **options: Any
) -> MoEngageClient:
    settings = DestinationSettings(
        "moengage",
        "moengage",
        server.url,
        read_timeout_seconds=5,
        options={**FIELDS, "app_id": moengage.APP_ID, "api_key": api_key, **options},
    )
    return MoEngageClient(settings)


def seed(server: EmulatorServer) -> None:
    requests.post(f"{server.url}/_emulator/contacts", json={"email": EMAIL}, timeout=5)


def state(server: EmulatorServer) -> dict[str, Any]:
    return requests.get(f"{server.url}/_emulator/state", timeout=5).json()


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, '{"message":"Your request has been processed successfully"}', Verdict.OK),
        (400, NOT_FOUND_BODY, Verdict.NOT_FOUND),
        (400, '{"error":{"message":"Extra key passed in the request"}}', Verdict.REJECTED),
        (400, '{"message":"Sentry check failed"}', Verdict.REJECTED),
        (400, '{"status":"fail","error":{"type":"RateLimitError"}}', Verdict.RATE_LIMITED),
        (401, "", Verdict.AUTH),
        (403, '{"error":{"message":"Email Opt-in Management feature not enabled"}}', Verdict.AUTH),
        (413, "", Verdict.REJECTED),
        (429, "", Verdict.RATE_LIMITED),
        (500, '{"error":{"code":"500 Internal Server Error"}}', Verdict.TRANSIENT),
    ],
)
def test_classify(status: int, body: str, verdict: Verdict) -> None:
    assert classify(status, body) is verdict


@pytest.mark.parametrize(
    ("decision", "status"),
    [("granted", "DOUBLE_OPTED_IN"), ("denied", "OPTED_OUT"), ("withdrawn", "OPTED_OUT")],
)
def test_channel_consent_sets_the_opt_in_status(
    server: EmulatorServer, decision: str, status: str
) -> None:
    seed(server)
    result = client(server, mode="channel_consent").write(ConsentWrite(EMAIL, decision, "f", None))
    assert isinstance(result, Written) and result.status == 200
    assert result.detail == f"channel_consent: {decision} written as {status}" + (
        "" if decision == "granted" else " (lossy: denied and withdrawn look the same there)"
    )
    contact = state(server)["contacts"][EMAIL.lower()]
    assert contact["channel"] == status


def test_unknown_has_no_moengage_value_and_sends_nothing(server: EmulatorServer) -> None:
    seed(server)
    result = client(server, mode="channel_consent").write(ConsentWrite(EMAIL, "unknown", "f", None))
    assert result == Written(None, "not_written", "not written: unknown has no MoEngage value")
    assert state(server)["requests_total"] == 0


def test_unknown_user_is_not_found(server: EmulatorServer) -> None:
    with pytest.raises(NotFoundError) as caught:
        client(server, mode="channel_consent").write(ConsentWrite(EMAIL, "denied", "f", None))
    assert caught.value.status == 400 and "No users found" in caught.value.body


def test_attribute_mode_sets_custom_attributes_of_existing_users_only(
    server: EmulatorServer,
) -> None:
    seed(server)
    known = client(server).write(ConsentWrite(EMAIL, "withdrawn", "form", "id-1"))
    unknown = client(server).write(ConsentWrite("other@example.com", "granted", "f", None))
    # Both answered 200 "accepted"; neither can be shown to have been applied.
    assert known == unknown == Written(200, "unverified", UNVERIFIED_NOTE)
    snapshot = state(server)
    assert snapshot["contacts"][EMAIL.lower()]["fields"] == {
        "tracking_consent": "withdrawn",
        "tracking_consent_source": "form",
        "tracking_consent_source_id": "id-1",
    }
    assert "other@example.com" not in snapshot["contacts"]  # update_existing_only
    assert snapshot["counters"]["ignored_unknown_users"] == 1


@pytest.mark.parametrize("server", [{"feature_enabled": False}], indirect=True)
def test_feature_off_is_an_auth_failure_that_pauses(server: EmulatorServer) -> None:
    seed(server)
    with pytest.raises(AuthError) as caught:
        client(server, mode="channel_consent").write(ConsentWrite(EMAIL, "denied", "f", None))
    assert caught.value.status == 403 and "not enabled" in caught.value.body
    with pytest.raises(AuthError):
        client(server, mode="channel_consent").probe()


def test_wrong_key_and_probe(server: EmulatorServer) -> None:
    with pytest.raises(AuthError):
        client(server, api_key="wrong").write(ConsentWrite(EMAIL, "denied", "f", None))
    assert client(server, mode="channel_consent").probe() == 400  # past auth, wrote nothing
    assert client(server).probe() == 400


@pytest.mark.parametrize("server", [{"rate_limit_per_minute": 2}], indirect=True)
def test_per_minute_limit_answers_429_without_a_body(server: EmulatorServer) -> None:
    seed(server)
    writer = client(server, mode="channel_consent")
    writer.write(ConsentWrite(EMAIL, "denied", "f", None))
    writer.write(ConsentWrite(EMAIL, "granted", "f", None))
    with pytest.raises(RateLimitedError) as caught:
        writer.write(ConsentWrite(EMAIL, "denied", "f", None))
    assert caught.value.status == 429 and caught.value.body == ""
    assert state(server)["counters"]["minute_rate_limit_violations"] == 1


def test_extra_key_is_rejected(server: EmulatorServer) -> None:
    seed(server)
    response = requests.put(
        f"{server.url}/v1.0/opt-in-management/user-preferences",
        json={
            "user_preferences": {
                "email_id": EMAIL,
                "opt_in_status": "opted_out",
                "channel": "email",
                "colour": "red",
            }
        },
        auth=(moengage.APP_ID, moengage.API_KEY),
        headers={"MOE-APPKEY": moengage.APP_ID},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["message"] == "Extra key passed in the request"
    assert classify(response.status_code, response.text) is Verdict.REJECTED
    assert issubclass(NotFoundError, RejectedError)


def _seed_user(server: EmulatorServer, customer_id: str) -> None:
    body = {"email": EMAIL, "customer_id": customer_id}
    requests.post(f"{server.url}/_emulator/contacts", json=body, timeout=5)


@pytest.mark.parametrize("server", [{"customer_id_mandatory": True}], indirect=True)
def test_a_workspace_wanting_customer_id_refuses_email_id_as_misconfigured(
    server: EmulatorServer,
) -> None:
    _seed_user(server, "crm-42")
    with pytest.raises(MisconfiguredError) as caught:
        client(server, mode="channel_consent").write(ConsentWrite(EMAIL, "denied", "f", "crm-42"))
    assert caught.value.status == 400 and "customer_id is mandatory" in caught.value.body


@pytest.mark.parametrize(
    "server", [{"customer_id_mandatory": True, "pii_tokenized": True}], indirect=True
)
def test_channel_consent_sends_the_configured_customer_id_instead_of_the_address(
    server: EmulatorServer,
) -> None:
    _seed_user(server, "crm-42")
    writer = client(server, mode="channel_consent", customer_id="{source_id}")
    result = writer.write(ConsentWrite(EMAIL, "denied", "f", "crm-42"))
    assert isinstance(result, Written) and result.outcome == "delivered"
    [entry] = state(server)["contacts"][EMAIL.lower()]["history"]
    assert entry["customer_id"] == "crm-42" and "email_id" not in entry
    assert entry["channel"] == "OPTED_OUT"


@pytest.mark.parametrize("server", [{"pii_tokenized": True}], indirect=True)
def test_with_pii_tokenization_the_address_finds_nobody(server: EmulatorServer) -> None:
    _seed_user(server, "crm-42")
    with pytest.raises(NotFoundError):
        client(server, mode="channel_consent").write(ConsentWrite(EMAIL, "denied", "f", None))


def test_a_template_value_missing_from_the_decision_is_misconfigured(
    server: EmulatorServer,
) -> None:
    writer = client(server, mode="channel_consent", customer_id="crm-{source_id}")
    with pytest.raises(MisconfiguredError, match="needs source_id"):
        writer.write(ConsentWrite(EMAIL, "denied", "f", None))
    assert state(server)["requests_total"] == 0  # nothing sent


def test_track_user_is_keyed_by_the_customer_id_template(server: EmulatorServer) -> None:
    _seed_user(server, "crm-42")
    result = client(server, customer_id="{source_id}").write(
        ConsentWrite(EMAIL, "granted", "f", "crm-42")
    )
    assert isinstance(result, Written) and result.outcome == "unverified"
    assert state(server)["contacts"][EMAIL.lower()]["fields"]["tracking_consent"] == "granted"
