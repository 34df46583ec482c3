"""MoEngage Delete User (https://www.moengage.com/docs/api/user/delete-users): the client
against the emulator (deleted, unknown, auth, transient) and the request it makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from emulators import moengage
from emulators.server import EmulatorServer
from relay.config.settings import DestinationSettings
from workers.destinations.errors import AuthError, RateLimitedError, TransientError
from workers.destinations.moengage import MoEngageClient

EMAIL = "Jane.Doe+erase@Example.com"
CUSTOMER_ID = "crm-4711"
FIELDS = {
    "consent_field": "tracking_consent",
    "source_field": "tracking_consent_source",
    "source_id_field": "tracking_consent_source_id",
}


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(moengage.create_emulator_app()) as running:
        yield running


def client(server: EmulatorServer, api_key: str = moengage.API_KEY) -> MoEngageClient:
    options = {
        **FIELDS,
        "app_id": moengage.APP_ID,
        "api_key": api_key,
        "customer_id": "crm-{source_id}",
    }
    settings = DestinationSettings(
        "moengage", "moengage", server.url, read_timeout_seconds=5, options=options
    )
    return MoEngageClient(settings)


def seed(server: EmulatorServer) -> None:
    body = {"email": EMAIL, "customer_id": CUSTOMER_ID}
    assert requests.post(f"{server.url}/_emulator/contacts", json=body, timeout=5).ok


def state(server: EmulatorServer) -> dict[str, Any]:
    found: dict[str, Any] = requests.get(f"{server.url}/_emulator/state", timeout=5).json()
    return found


def test_delete_removes_the_user_and_says_accepted(server: EmulatorServer) -> None:
    seed(server)
    assert client(server).delete(CUSTOMER_ID) == "accepted"
    assert state(server)["contacts"] == {}
    [call] = [r for r in state(server)["requests"] if r["path"] == "/v1/customer/delete"]
    assert call["method"] == "POST"


def test_the_request_is_the_documented_one(server: EmulatorServer) -> None:
    seen: list[requests.PreparedRequest] = []
    moe = client(server)
    moe._http.session.hooks["response"].append(lambda r, **_: seen.append(r.request))
    moe.delete(CUSTOMER_ID)
    [sent] = seen
    assert sent.url == f"{server.url}/v1/customer/delete?app_id={moengage.APP_ID}"
    assert sent.body is not None
    assert b'"identity_type": "customer_id"' in sent.body
    assert b'"identity_value": "crm-4711"' in sent.body
    assert str(sent.headers["Authorization"]).startswith("Basic ")


def test_an_unknown_user_is_accepted_too_and_nothing_is_deleted(server: EmulatorServer) -> None:
    # MoEngage documents only the 200 "accepted" (processed later): it does not say whether
    # the user existed, so the relay records `accepted`, never `deleted`.
    seed(server)
    assert client(server).delete("crm-nobody") == "accepted"
    assert EMAIL.lower() in state(server)["contacts"]
    assert state(server)["counters"]["ignored_unknown_deletes"] == 1


def test_bad_credentials_are_an_auth_error(server: EmulatorServer) -> None:
    seed(server)
    with pytest.raises(AuthError):
        client(server, api_key="wrong").delete(CUSTOMER_ID)
    assert EMAIL.lower() in state(server)["contacts"]


@pytest.mark.parametrize(
    ("status", "error"), [(503, TransientError), (500, TransientError), (429, RateLimitedError)]
)
def test_a_server_error_or_rate_limit_is_transient_and_deletes_nothing(
    server: EmulatorServer, status: int, error: type[Exception]
) -> None:
    seed(server)
    faults = {"error_rate": 1.0, "error_status": status}
    if status == 429:
        faults = {"rate_limit_per_second": 0.001}
    assert requests.put(f"{server.url}/_emulator/faults", json=faults, timeout=5).ok
    moe = client(server)
    with pytest.raises(error):
        moe.delete(CUSTOMER_ID)
    assert EMAIL.lower() in state(server)["contacts"]
