"""Flower under `consent-relay run`: basic auth from the config (401 without, 200 with), the
worker's task events reach it, and demo mode prints working credentials in its banner."""

from __future__ import annotations

import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.support import (
    Process,
    decision,
    free_port,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "flower-e2e-password"
DEMO_FLOWER = "http://127.0.0.1:5555"


def _status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    try:
        return requests.get(url, auth=auth, timeout=2).status_code
    except requests.RequestException:
        return None


def _start(workdir: Path, env: dict[str, str], port: int, flower_url: str) -> Process:
    argv = [str(BIN / "consent-relay"), "run", "--procfile", str(REPO / "Procfile")]
    relay = Process(argv, {**os.environ, **env, "PORT": str(port)}, workdir, workdir / "run.log")
    wait_for(lambda: _status(f"http://127.0.0.1:{port}/healthz") == 200, 60, "web /healthz")
    wait_for(lambda: _status(f"{flower_url}/api/tasks") == 401, 60, "Flower")
    relay.wait_output("ready.", 60)  # the celery worker
    return relay


@pytest.fixture
def configured(tmp_path: Path, engage: str) -> Iterator[tuple[str, str, Process]]:
    port, flower_port = free_port(), free_port()
    config = write_config(tmp_path / "relay.toml", data_dir=tmp_path / "var", engage_url=engage)
    with config.open("a") as handle:
        handle.write(f'\n[flower]\nport = {flower_port}\npassword = "{PASSWORD}"\n')
    flower_url = f"http://127.0.0.1:{flower_port}"
    relay = _start(tmp_path, {"CONSENT_RELAY_CONFIG": str(config)}, port, flower_url)
    try:
        yield f"http://127.0.0.1:{port}", flower_url, relay
    finally:
        relay.stop()


def _tasks(flower_url: str) -> dict[str, Any]:
    response = requests.get(f"{flower_url}/api/tasks", auth=("admin", PASSWORD), timeout=5)
    assert response.status_code == 200
    tasks: dict[str, Any] = response.json()
    return tasks


def test_flower_asks_for_the_configured_credentials_and_lists_deliveries(
    configured: tuple[str, str, Process],
) -> None:
    web, flower_url, relay = configured
    assert _status(f"{flower_url}/api/tasks", ("admin", "wrong-password")) == 401
    body = decision(f"flower.{uuid.uuid4().hex[:8]}@example.org", "granted")
    headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
    response = requests.post(f"{web}/webhooks/signup", data=body, headers=headers, timeout=10)
    assert response.status_code == 202

    def delivered() -> bool:
        names = {task["name"] for task in _tasks(flower_url).values()}
        return "consent_relay.deliver_contact" in names

    wait_for(delivered, 30, "a deliver_contact task in Flower")
    assert PASSWORD not in relay.output()  # neither the banner nor any process printed it


def test_demo_mode_prints_flower_credentials_that_work(tmp_path: Path) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5555)) == 0:
            pytest.skip("port 5555 (the demo's Flower) is in use on this machine")
    demo = _start(tmp_path, {"CONSENT_RELAY_CONFIG": ""}, free_port(), DEMO_FLOWER)
    try:
        found = re.search(r"Flower \(tasks\): (\S+)\s+user (\S+), password (\S+)", demo.output())
        assert found, demo.output()[:2000]
        url, user, password = found.groups()
        assert url == DEMO_FLOWER
        assert _status(f"{url}/api/tasks") == 401
        assert _status(f"{url}/api/tasks", (user, password)) == 200
    finally:
        demo.stop()
