"""Fixtures for the logs and metrics tests: `relay`, one relay app with its ledger and the Engage
emulator (tests.helpers.observability_world)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.engage import EmulatorServer
from tests.helpers.observability_world import Relay, build_relay


@pytest.fixture
def relay(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Relay]:
    built = build_relay(tmp_path, emulator.url)
    try:
        yield built
    finally:
        built.close()
