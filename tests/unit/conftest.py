"""Shared fixtures for the unit tests: the real Engage emulator over HTTP and a migrated ledger.

Only fixtures live here (tests never import this module); constants are repeated where needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from emulators.engage import EmulatorServer, create_emulator_app
from relay.config.settings import DestinationSettings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from tests.helpers.delivery_world import DeliveryWorld, Ledger, State

EMULATOR_USERNAME = "api-user@example.com"
EMULATOR_PASSWORD = "engage-demo-password"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """One Engage emulator (port 0) for the whole run; `emulator` resets it for each test."""
    app = create_emulator_app(username=EMULATOR_USERNAME, password=EMULATOR_PASSWORD)
    server = EmulatorServer(app).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    response = requests.post(f"{emulator_server.url}/_emulator/reset", timeout=5)
    assert response.status_code == 204
    return emulator_server


@pytest.fixture
def emulator_state(emulator: EmulatorServer) -> Callable[[], dict[str, Any]]:
    """Read the emulator's inspection endpoint: contacts, request log and call counts."""

    def read() -> dict[str, Any]:
        response = requests.get(f"{emulator.url}/_emulator/state", timeout=5)
        assert response.status_code == 200
        state: dict[str, Any] = response.json()
        return state

    return read


@pytest.fixture
def engage_settings(emulator: EmulatorServer) -> Callable[..., DestinationSettings]:
    """DestinationSettings for the emulator; pass password=... to get a failing destination."""

    def build(
        password: str = EMULATOR_PASSWORD, base_url: str | None = None
    ) -> DestinationSettings:
        return DestinationSettings(
            name="engage",
            kind="mapp-engage",
            base_url=base_url or emulator.url,
            username=EMULATOR_USERNAME,
            password=password,
            connect_timeout_seconds=2.0,
            read_timeout_seconds=5.0,
        )

    return build


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A SQLite ledger in tmp_path, migrated to head with the project's own migrations."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield Ledger(url, engine, make_session_factory(engine))
    finally:
        engine.dispose()


@pytest.fixture
def delivery_world(
    ledger: Ledger,
    emulator: EmulatorServer,
    emulator_state: State,
    engage_settings: Callable[..., DestinationSettings],
) -> Iterator[DeliveryWorld]:
    built = DeliveryWorld(ledger, emulator, emulator_state, engage_settings)
    try:
        yield built
    finally:
        for engine in built._side_engines:
            engine.dispose()
