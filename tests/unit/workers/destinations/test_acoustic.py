"""The Acoustic Connect client: classification, GraphQL literals, then real calls (single and
batched) against the emulator, which parses the query with graphql-core."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators import acoustic
from emulators.server import EmulatorServer
from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from workers.destinations.acoustic import AcousticClient, Enum, classify, literal
from workers.destinations.errors import (
    AuthError,
    BatchPartialError,
    MisconfiguredError,
    NotFoundError,
)
from workers.destinations.toolkit import Verdict, Written

EMAIL = "Jane.Doe+tag@Example.com"
FIELDS = {
    "consent_field": "tracking_consent",
    "source_field": "tracking_consent_source",
    "source_id_field": "tracking_consent_source_id",
}


def gql_errors(*codes: str) -> str:
    return json.dumps({"errors": [{"message": "x", "extensions": {"code": c}} for c in codes]})


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(acoustic.create_emulator_app()) as running:
        yield running


def client(
    server: EmulatorServer, api_key: str = acoustic.API_KEY, **options: Any
) -> AcousticClient:
    settings = DestinationSettings(
        "acoustic",
        "acoustic-connect",
        server.url,
        read_timeout_seconds=5,
        options={
            **FIELDS,
            "api_key": api_key,
            "data_set_id": acoustic.DATA_SET_ID,
            "batch_size": 10,
            **options,
        },
    )
    return AcousticClient(settings)


def seed(server: EmulatorServer, *emails: str) -> None:
    for email in emails or (EMAIL,):
        requests.post(f"{server.url}/_emulator/contacts", json={"email": email}, timeout=5)


def state(server: EmulatorServer) -> dict[str, Any]:
    return requests.get(f"{server.url}/_emulator/state", timeout=5).json()


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, '{"data":{"updateContacts":{"modifiedCount":1}}}', Verdict.OK),
        (200, gql_errors("CONTACT_NOT_FOUND_BY_KEY"), Verdict.NOT_FOUND),
        (400, gql_errors("CONTACT_NOT_FOUND_BY_KEY"), Verdict.NOT_FOUND),
        (
            200,
            json.dumps({"errors": [{"message": "CONTACT_NOT_FOUND_BY_KEY: gone"}]}),
            Verdict.NOT_FOUND,
        ),
        (200, gql_errors("ATTRIBUTE_NOT_FOUND"), Verdict.MISCONFIGURED),
        (200, gql_errors("CHANNEL_NOT_DEFINED"), Verdict.MISCONFIGURED),
        (200, gql_errors("INVALID_CHANNEL_TYPE"), Verdict.REJECTED),
        (200, gql_errors("UNAUTHENTICATED"), Verdict.AUTH),
        (401, "", Verdict.AUTH),
        (429, "", Verdict.RATE_LIMITED),
        (200, gql_errors("TOO_MANY_REQUESTS"), Verdict.RATE_LIMITED),
        (502, "<html>Bad Gateway</html>", Verdict.TRANSIENT),
        (200, "<html>proxy</html>", Verdict.TRANSIENT),
        (404, "", Verdict.REJECTED),
    ],
)
def test_classify(status: int, body: str, verdict: Verdict) -> None:
    assert classify(status, body) is verdict


def test_literal_quotes_strings_and_leaves_enums_bare() -> None:
    value = {"a": 'x"y\n', "b": [Enum("EMAIL"), None, 3]}
    assert literal(value) == '{a: "x\\"y\\n", b: [EMAIL, null, 3]}'


def test_attribute_mode_writes_the_attributes(server: EmulatorServer) -> None:
    seed(server)
    assert client(server).write(ConsentWrite(EMAIL, "denied", "form", "7")) == 200
    contact = state(server)["contacts"][EMAIL.lower()]
    assert contact["fields"] == {
        "tracking_consent": "denied",
        "tracking_consent_source": "form",
        "tracking_consent_source_id": "7",
    }
    assert contact["channel"] is None  # consent to receive mail is not touched


@pytest.mark.parametrize(
    ("decision", "status"),
    [("granted", "OPT_IN"), ("denied", "OPT_OUT"), ("withdrawn", "OPT_OUT"), ("unknown", None)],
)
def test_channel_consent(server: EmulatorServer, decision: str, status: str | None) -> None:
    seed(server)
    result = client(server, mode="channel_consent").write(ConsentWrite(EMAIL, decision, "f", None))
    assert isinstance(result, Written) and result.status == 200
    assert "UNVERIFIED" in (result.detail or "") if status is None else True
    assert state(server)["contacts"][EMAIL.lower()]["channel"] == status


def test_missing_contact_and_missing_attribute(server: EmulatorServer) -> None:
    with pytest.raises(NotFoundError):
        client(server).write(ConsentWrite(EMAIL, "denied", "f", None))
    seed(server)
    with pytest.raises(MisconfiguredError) as caught:
        client(server, consent_field="Tracking Consent").write(
            ConsentWrite(EMAIL, "denied", "f", None)
        )
    assert "ATTRIBUTE_NOT_FOUND" in caught.value.body
    assert state(server)["contacts"][EMAIL.lower()]["history"] == []  # nothing applied


def test_a_batch_is_one_mutation(server: EmulatorServer) -> None:
    emails = [f"person{i}@example.com" for i in range(5)]
    seed(server, *emails)
    writes = [
        ConsentWrite(e, "granted" if i % 2 else "denied", "f", str(i)) for i, e in enumerate(emails)
    ]
    assert client(server).write_many(writes) == [200] * 5
    snapshot = state(server)
    assert snapshot["requests_total"] == 1
    assert [snapshot["contacts"][e]["fields"]["tracking_consent"] for e in emails] == [
        w.tracking_consent for w in writes
    ]


def test_a_batch_with_a_missing_contact_is_retried_one_by_one(server: EmulatorServer) -> None:
    seed(server, "known@example.com")
    writes = [
        ConsentWrite("known@example.com", "denied", "f", None),
        ConsentWrite("unknown@example.com", "denied", "f", None),
    ]
    results = client(server).write_many(writes)
    assert all(isinstance(r, BatchPartialError) for r in results)


def test_not_written_entries_keep_their_place(server: EmulatorServer) -> None:
    seed(server, "a@example.com", "b@example.com")
    writer = client(server, mode="channel_consent")
    results = writer.write_many(
        [
            ConsentWrite("a@example.com", "unknown", "f", None),
            ConsentWrite("b@example.com", "granted", "f", None),
        ]
    )
    assert [r.status if isinstance(r, Written) else r for r in results] == [200, 200]


def test_wrong_key_and_probe(server: EmulatorServer) -> None:
    with pytest.raises(AuthError):
        client(server, api_key="nope").write(ConsentWrite(EMAIL, "denied", "f", None))
    with pytest.raises(AuthError):
        client(server, api_key="nope").probe()
    assert client(server).probe() == 200


def test_syntax_errors_are_answered_like_graphql(server: EmulatorServer) -> None:
    response = requests.post(
        server.url, json={"query": "mutation {"}, headers={"x-api-key": acoustic.API_KEY}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


def test_a_short_modified_count_is_unverified_not_delivered() -> None:
    """No error, but modifiedCount says fewer contacts changed than were sent: the answer
    cannot show this write happened (the emulator does not count unchanged contacts here)."""
    app = acoustic.create_emulator_app(count_unchanged=False)
    with EmulatorServer(app) as running:
        seed(running)
        write = ConsentWrite(EMAIL, "denied", "form", "id-1")
        assert client(running).write(write) == 200  # changed: modifiedCount 1 of 1
        again = client(running).write(write)
    assert again == Written(200, "unverified", "modifiedCount 0 of 1")


def test_a_wrong_audience_is_misconfigured(server: EmulatorServer) -> None:
    seed(server)
    with pytest.raises(MisconfiguredError):
        client(server, data_set_id="no-such-audience").write(
            ConsentWrite(EMAIL, "denied", "f", None)
        )


def test_the_audience_is_optional(server: EmulatorServer) -> None:
    seed(server)
    assert client(server, data_set_id=None).write(ConsentWrite(EMAIL, "denied", "f", None)) == 200
    [entry] = state(server)["contacts"][EMAIL.lower()]["history"]
    assert entry["data_set_id"] is None
