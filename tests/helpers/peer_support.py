"""Helpers for the peer-destination tests (issue 7): the three peer emulators over real HTTP
and the config tables that point the relay at them (imported as `peer_support`)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from emulators import acoustic, dotdigital, moengage
from emulators.server import EmulatorServer
from tests.helpers.support import Process, free_port, wait_for

DOTDIGITAL_FIELD = "TRACKING_CONSENT"


@dataclass
class Peers:
    acoustic: str
    dotdigital: str
    moengage: str

    def urls(self) -> dict[str, str]:
        return {"acoustic": self.acoustic, "dotdigital": self.dotdigital, "moengage": self.moengage}


@contextmanager
def peer_emulators(any_contact: bool = True) -> Iterator[Peers]:
    """The three peer emulators in this process, each on its own port."""
    with ExitStack() as stack:
        urls = [
            stack.enter_context(EmulatorServer(module.create_emulator_app(any_contact=any_contact)))
            for module in (acoustic, dotdigital, moengage)
        ]
        yield Peers(*(server.url for server in urls))


def peer_tables(peers: Peers, **overrides: dict[str, Any]) -> str:
    """`[destinations.acoustic]`, `.dotdigital` and `.moengage` for the emulators' defaults;
    `overrides` adds or replaces keys per destination (e.g. moengage={"mode": ...})."""
    tables: dict[str, dict[str, Any]] = {
        "acoustic": {
            "kind": "acoustic-connect",
            "base_url": peers.acoustic,
            "api_key": acoustic.API_KEY,
            "data_set_id": acoustic.DATA_SET_ID,
        },
        "dotdigital": {
            "kind": "dotdigital",
            "base_url": peers.dotdigital,
            "username": dotdigital.USERNAME,
            "password": dotdigital.PASSWORD,
            "rate_limit_per_second": 20,
        },
        "moengage": {
            "kind": "moengage",
            "base_url": peers.moengage,
            "app_id": moengage.APP_ID,
            "api_key": moengage.API_KEY,
        },
    }
    lines = []
    for name, table in tables.items():
        table = {**table, **overrides.get(name, {})}
        lines.append(f"[destinations.{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def state(url: str) -> dict[str, Any]:
    result: dict[str, Any] = requests.get(f"{url}/_emulator/state", timeout=10).json()
    return result


def contact(url: str, email: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = state(url)["contacts"].get(email.lower())
    return found


class PeerProcess:
    """A peer emulator in its own process (the chaos tests): `<module> --port N <flags>`."""

    def __init__(self, module: str, workdir: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", f"emulators.{module}", "--port", str(self.port), *flags]
        log = workdir / f"{module}-{uuid.uuid4().hex[:6]}.log"
        self.process = Process(argv, dict(os.environ), workdir, log)
        wait_for(self._up, 30, f"the {module} emulator")

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}/_emulator/faults", timeout=1).ok
        except requests.ConnectionError:
            return False

    def faults(self, **values: Any) -> None:
        response = requests.put(f"{self.url}/_emulator/faults", json=values, timeout=5)
        assert response.status_code == 200, response.text

    def stop(self) -> None:
        self.process.stop()
