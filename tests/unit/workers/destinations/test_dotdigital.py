"""The Dotdigital client: answer classification, then real calls against the emulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators import dotdigital
from emulators.server import EmulatorServer
from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from workers.destinations.dotdigital import DotdigitalClient, classify
from workers.destinations.errors import (
    AuthError,
    MisconfiguredError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
)
from workers.destinations.toolkit import Verdict, Written

EMAIL = "Jane.Doe+tag@Example.com"
FIELDS = {
    "consent_field": "TRACKING_CONSENT",
    "source_field": "TRACKING_CONSENT_SOURCE",
    "source_id_field": "TRACKING_CONSENT_SOURCE_ID",
}
AUTH = (dotdigital.USERNAME, dotdigital.PASSWORD)


class Counting:
    def __init__(self) -> None:
        self.acquired = self.slowed = 0

    def acquire(self) -> None:
        self.acquired += 1

    def slow_down(self) -> None:
        self.slowed += 1


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(dotdigital.create_emulator_app()) as running:
        yield running


def client(
    server: EmulatorServer,
    throttle: Any = None,
    password: str = dotdigital.PASSWORD,
    **options: Any,
) -> DotdigitalClient:
    settings = DestinationSettings(
        "dotdigital",
        "dotdigital",
        server.url,
        dotdigital.USERNAME,
        password,
        read_timeout_seconds=5,
        options={**FIELDS, **options},
    )
    return DotdigitalClient(settings, throttle=throttle)


def seed(server: EmulatorServer, channel: str | None = None) -> None:
    requests.post(
        f"{server.url}/_emulator/contacts", json={"email": EMAIL, "channel": channel}, timeout=5
    )


def stored(server: EmulatorServer) -> dict[str, Any]:
    return requests.get(f"{server.url}/_emulator/state", timeout=5).json()["contacts"][
        EMAIL.lower()
    ]


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, "{}", Verdict.OK),
        (201, "{}", Verdict.OK),
        (404, '{"errorCode":"contacts:contactNotFound","description":"..."}', Verdict.NOT_FOUND),
        (404, "<html>Not Found</html>", Verdict.REJECTED),  # a wrong base_url
        (400, '{"errorCode":"contacts:dataFieldNotFound"}', Verdict.MISCONFIGURED),
        (400, '{"message":"Error: ERROR_DATAFIELD_NOTFOUND"}', Verdict.MISCONFIGURED),
        (400, '{"message":"ERROR_APIUSAGE_EXCEEDED"}', Verdict.RATE_LIMITED),  # flat scheme
        (400, '{"errorCode":"contacts:invalidId"}', Verdict.REJECTED),
        (409, '{"errorCode":"contacts:idAlreadyExists"}', Verdict.REJECTED),
        (401, "", Verdict.AUTH),
        (403, "", Verdict.AUTH),
        (429, "", Verdict.RATE_LIMITED),
        (408, "", Verdict.TRANSIENT),
        (503, "", Verdict.TRANSIENT),
    ],
)
def test_classify(status: int, body: str, verdict: Verdict) -> None:
    assert classify(status, body) is verdict


def test_attribute_mode_writes_the_data_fields_of_an_existing_contact(
    server: EmulatorServer,
) -> None:
    seed(server, channel="unsubscribed")
    throttle = Counting()
    status = client(server, throttle).write(ConsentWrite(EMAIL, "withdrawn", "form", None))
    assert status == 200
    contact = stored(server)
    assert contact["fields"] == {
        "TRACKING_CONSENT": "withdrawn",
        "TRACKING_CONSENT_SOURCE": "form",
        "TRACKING_CONSENT_SOURCE_ID": "",
    }
    assert contact["channel"] == "unsubscribed"  # the marketing status is left alone
    assert throttle.acquired == 2  # lookup, then PATCH: each takes a rate-limit slot


def test_attribute_mode_never_creates_a_contact(server: EmulatorServer) -> None:
    """A PATCH would create a *subscribed* contact (docs/reference/dotdigital.md#consent-values): an
    opt-in nobody gave."""
    with pytest.raises(NotFoundError) as caught:
        client(server).write(ConsentWrite(EMAIL, "granted", "form", "1"))
    assert caught.value.status == 404 and "contactNotFound" in caught.value.body
    state = requests.get(f"{server.url}/_emulator/state", timeout=5).json()
    assert state["contacts"] == {}
    assert [r["method"] for r in state["requests"]] == ["GET"]


def test_missing_data_field_is_a_configuration_error(server: EmulatorServer) -> None:
    seed(server)
    settings_client = client(server, consent_field="NO_SUCH_FIELD")
    with pytest.raises(MisconfiguredError) as caught:
        settings_client.write(ConsentWrite(EMAIL, "granted", "form", None))
    assert caught.value.status == 400 and "NO_SUCH_FIELD" in caught.value.body


@pytest.mark.parametrize(
    ("decision", "status"),
    [("granted", "subscribed"), ("denied", "unsubscribed"), ("withdrawn", "unsubscribed")],
)
def test_channel_consent_maps_onto_the_email_status(
    server: EmulatorServer, decision: str, status: str
) -> None:
    seed(server)
    result = client(server, mode="channel_consent").write(ConsentWrite(EMAIL, decision, "f", "7"))
    assert isinstance(result, Written) and result.status == 200
    assert f"written as {status}" in (result.detail or "")
    assert ("lossy" in (result.detail or "")) == (decision != "granted")
    assert stored(server)["channel"] == status
    assert stored(server)["fields"]["TRACKING_CONSENT"] == decision  # evidence alongside


def test_channel_consent_writes_nothing_for_unknown(server: EmulatorServer) -> None:
    seed(server, channel="subscribed")
    result = client(server, mode="channel_consent").write(ConsentWrite(EMAIL, "unknown", "f", None))
    assert result == Written(None, "not_written", "not written: unknown has no Dotdigital value")
    assert requests.get(f"{server.url}/_emulator/state", timeout=5).json()["requests_total"] == 0


def test_rate_limit_answer_slows_the_shared_limiter(server: EmulatorServer) -> None:
    seed(server)
    requests.put(f"{server.url}/_emulator/faults", json={"rate_limit_per_second": 0}, timeout=5)
    throttle = Counting()
    with pytest.raises(RateLimitedError) as caught:
        client(server, throttle).write(ConsentWrite(EMAIL, "granted", "f", None))
    assert caught.value.status == 429 and throttle.slowed == 1


def test_refused_credentials_and_the_probe(server: EmulatorServer) -> None:
    with pytest.raises(AuthError):
        client(server, password="wrong").write(ConsentWrite(EMAIL, "granted", "f", None))
    with pytest.raises(AuthError):
        client(server, password="wrong").probe()
    assert client(server).probe() == 404  # a reserved address: authenticated, writes nothing


def test_invalid_status_is_rejected(server: EmulatorServer) -> None:
    response = requests.patch(
        f"{server.url}/contacts/v3/email/x%40example.com",
        json={"channelProperties": {"email": {"status": "maybe"}}},
        auth=(dotdigital.USERNAME, dotdigital.PASSWORD),
        timeout=5,
    )
    assert response.status_code == 400
    assert classify(response.status_code, response.text) is Verdict.REJECTED
    assert issubclass(NotFoundError, RejectedError)


RECORD = {"consent_text": "Yes, you may track my e-mail opens", "consent_url": "https://ex.com/f"}
DECIDED = dt.datetime(2026, 6, 1, 12, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))


@pytest.mark.parametrize("mode", ["attribute", "channel_consent"])
def test_a_grant_carries_a_consent_record_from_the_decision(
    server: EmulatorServer, mode: str
) -> None:
    seed(server)
    result = client(server, mode=mode, **RECORD).write(
        ConsentWrite(EMAIL, "granted", "form", "id-1", DECIDED)
    )
    assert isinstance(result, Written) and "consent record written" in (result.detail or "")
    found = requests.get(f"{server.url}/contacts/v3/email/{EMAIL}", auth=AUTH, timeout=5).json()
    assert found["consentRecords"] == [
        {
            "text": RECORD["consent_text"],
            "dateTimeConsented": "2026-06-01T10:30:05Z",  # the decision's time, in UTC
            "url": RECORD["consent_url"],
        }
    ]


@pytest.mark.parametrize("consent", ["denied", "withdrawn"])
def test_no_record_for_anything_but_a_grant(server: EmulatorServer, consent: str) -> None:
    seed(server)
    client(server, **RECORD).write(ConsentWrite(EMAIL, consent, "form", "id-1", DECIDED))
    contact = requests.get(f"{server.url}/_emulator/state", timeout=5).json()["contacts"]
    assert "consent_records" not in contact[EMAIL.lower()]


def test_no_record_unless_configured(server: EmulatorServer) -> None:
    seed(server)
    assert client(server).write(ConsentWrite(EMAIL, "granted", "form", "id-1", DECIDED)) == 200
    contact = requests.get(f"{server.url}/_emulator/state", timeout=5).json()["contacts"]
    assert "consent_records" not in contact[EMAIL.lower()]


def test_the_emulator_refuses_an_incomplete_record(server: EmulatorServer) -> None:
    body = {"consentRecords": [{"text": "", "dateTimeConsented": "2026-06-01T10:30:05Z"}]}
    response = requests.patch(
        f"{server.url}/contacts/v3/email/{EMAIL}", json=body, auth=AUTH, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "contacts:invalidConsentRecords"
    assert classify(response.status_code, response.text) is Verdict.REJECTED


# --- read-back (workers/verification/) --------------------------------------------------------


def test_read_back_in_attribute_mode_finds_an_out_of_band_edit(server: EmulatorServer) -> None:
    seed(server)
    writer, throttle = client(server), Counting()
    writer.write(write("denied"))
    reader = client(server, throttle=throttle)
    reading = reader.read(write("denied"))
    assert reading is not None and reading.matches and reading.seen == "denied"
    assert throttle.acquired == 1  # one look-up, paced like any call
    edited = requests.post(
        f"{server.url}/_emulator/contacts/{EMAIL}/edit",
        json={"fields": {"TRACKING_CONSENT": "granted"}},
        timeout=5,
    )
    assert edited.status_code == 200
    drift = reader.read(write("denied"))
    assert drift is not None and not drift.matches
    assert (drift.seen, drift.expected) == ("granted", "denied")
    assert stored(server)["history"][-1]["call"] == "edit"


def test_read_back_in_channel_mode_compares_the_email_status(server: EmulatorServer) -> None:
    seed(server, channel="subscribed")
    reader = client(server, mode="channel_consent")
    reader.write(write("withdrawn"))
    reading = reader.read(write("withdrawn"))
    assert reading is not None and (reading.seen, reading.expected) == (
        "unsubscribed",
        "unsubscribed",
    )
    assert reader.read(write("unknown")) is None  # no status for unknown: nothing to verify


def test_read_back_of_a_missing_contact(server: EmulatorServer) -> None:
    reading = client(server).read(write("granted"))
    assert reading is not None and reading.seen == "(no contact)" and not reading.matches


def write(consent: str) -> ConsentWrite:
    return ConsentWrite(EMAIL, consent, "form", None)
