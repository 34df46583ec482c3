"""Mapp Engage `contact/delete` (https://docs.mapp.com/apidocs/contactdelete): the client against
the emulator, and how the answer is classified."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from emulators.engage import DEFAULT_PASSWORD, DEFAULT_USERNAME, EmulatorServer, create_emulator_app
from relay.config.settings import DestinationSettings
from workers.destinations.engage import EngageClient
from workers.destinations.errors import AuthError, TransientError

EMAIL = "Jane.Doe+erase@Example.com"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(create_emulator_app()) as server:
        yield server


def client(url: str, password: str = DEFAULT_PASSWORD) -> EngageClient:
    settings = DestinationSettings(
        name="engage",
        kind="mapp-engage",
        base_url=url,
        username=DEFAULT_USERNAME,
        password=password,
        read_timeout_seconds=5.0,
    )
    return EngageClient(settings)


def contacts(server: EmulatorServer) -> dict[str, object]:
    found: dict[str, object] = requests.get(f"{server.url}/_emulator/state", timeout=5).json()[
        "contacts"
    ]
    return found


def create(server: EmulatorServer) -> None:
    body = {"emailAddress": EMAIL, "attributes": []}
    auth = (DEFAULT_USERNAME, DEFAULT_PASSWORD)
    url = f"{server.url}/api/rest/contact/create"
    assert requests.post(url, json=body, auth=auth, timeout=5).status_code == 200


def test_delete_removes_the_contact(emulator: EmulatorServer) -> None:
    create(emulator)
    assert client(emulator.url).delete(EMAIL) == "deleted"
    assert contacts(emulator) == {}


def test_an_unknown_contact_is_absent_not_an_error(emulator: EmulatorServer) -> None:
    # The emulator answers 400 NO_SUCH_OBJECT, as Engage does for contact/get.
    assert client(emulator.url).delete("nobody@example.com") == "absent"


def test_bad_credentials_are_an_auth_error(emulator: EmulatorServer) -> None:
    create(emulator)
    with pytest.raises(AuthError):
        client(emulator.url, password="wrong").delete(EMAIL)
    assert EMAIL.lower() in contacts(emulator)


def test_a_server_error_is_transient_and_deletes_nothing(emulator: EmulatorServer) -> None:
    create(emulator)
    faults = {"error_rate": 1.0, "error_status": 503}
    assert requests.put(f"{emulator.url}/_emulator/faults", json=faults, timeout=5).ok
    with pytest.raises(TransientError):
        client(emulator.url).delete(EMAIL)
    assert EMAIL.lower() in contacts(emulator)
