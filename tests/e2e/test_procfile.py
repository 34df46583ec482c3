"""End to end: `consent-relay run` starts the Procfile processes (honcho: gunicorn, celery
worker, celery beat); an independent Engage emulator process stands in for Engage; signed
events go over HTTP, as a sender would send them."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.support import (
    OTHER_SECRET,
    Process,
    decision,
    emulator_contact,
    free_port,
    is_up,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
FAST = {
    "sweep_interval_seconds": 0.5,
    "redispatch_after_seconds": 2,
    "retry_schedule_seconds": [1, 2],
    "probe_interval_seconds": 1,
}


@dataclass
class ProcfileRelay:
    url: str
    engage: str
    engage_port: int
    workdir: Path
    process: Process

    def post(self, body: bytes, msg_id: str | None = None, **kw: str) -> requests.Response:
        headers = signed_headers(body, msg_id=msg_id or f"msg_{uuid.uuid4().hex}", **kw)
        return requests.post(f"{self.url}/webhooks/signup", data=body, headers=headers, timeout=10)


def _emulator(port: int, workdir: Path) -> Process:
    proc = Process(
        [str(BIN / "engage-emulator"), "--port", str(port)],
        dict(os.environ),
        workdir,
        workdir / f"emulator-{uuid.uuid4().hex[:6]}.log",
    )
    wait_for(lambda: is_up(f"http://127.0.0.1:{port}/_emulator/state"), what="emulator")
    return proc


def _start_relay(workdir: Path, env: dict[str, str], port: int) -> Process:
    argv = [str(BIN / "consent-relay"), "run", "--procfile", str(REPO / "Procfile")]
    relay = Process(argv, {**os.environ, **env, "PORT": str(port)}, workdir, workdir / "run.log")
    wait_for(lambda: is_up(f"http://127.0.0.1:{port}/healthz"), 60, "web /healthz")
    relay.wait_output("ready.", 60)  # the celery worker
    relay.wait_output("beat: Starting", 60)
    return relay


@pytest.fixture(scope="module")
def procfile_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcfileRelay]:
    workdir = tmp_path_factory.mktemp("e2e")
    engage_port, port = free_port(), free_port()
    emulator = _emulator(engage_port, workdir)
    engage = f"http://127.0.0.1:{engage_port}"
    config = write_config(
        workdir / "relay.toml", data_dir=workdir / "var", engage_url=engage, delivery=FAST
    )
    process = _start_relay(workdir, {"CONSENT_RELAY_CONFIG": str(config)}, port)
    yield ProcfileRelay(f"http://127.0.0.1:{port}", engage, engage_port, workdir, process)
    process.stop(signal.SIGTERM)
    emulator.stop()


def _email() -> str:
    return f"E2E.{uuid.uuid4().hex[:8]}@Example.org"


def _consent(procfile_relay: ProcfileRelay, email: str) -> str | None:
    contact = emulator_contact(procfile_relay.engage, email)
    return contact["attributes"]["tracking_consent"] if contact else None


def test_new_contact_reaches_engage(procfile_relay: ProcfileRelay) -> None:
    email = _email()
    response = procfile_relay.post(
        decision(email, "granted", source="newsletter_form", source_id="v3")
    )
    assert response.status_code == 202
    assert set(response.json()) == {"status", "event_id", "events"}
    assert response.json()["status"] == "accepted"
    wait_for(lambda: _consent(procfile_relay, email) == "granted", what="delivery")
    attributes = emulator_contact(procfile_relay.engage, email)["attributes"]
    assert attributes["tracking_consent_source"] == "newsletter_form"
    assert attributes["tracking_consent_source_id"] == "v3"


def test_duplicate_delivery_is_written_once(procfile_relay: ProcfileRelay) -> None:
    email, msg_id = _email(), f"msg_{uuid.uuid4().hex}"
    body = decision(email, "denied", occurred_at=T0)
    assert procfile_relay.post(body, msg_id).status_code == 202
    wait_for(lambda: _consent(procfile_relay, email) == "denied", what="delivery")
    # The sender retries later with a fresh timestamp and a rotated secret: still a duplicate.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    again = procfile_relay.post(body, msg_id, secret=OTHER_SECRET, when=later)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(emulator_contact(procfile_relay.engage, email)["history"]) == 1


def test_older_decision_after_newer_does_not_win(procfile_relay: ProcfileRelay) -> None:
    email = _email()
    assert procfile_relay.post(decision(email, "withdrawn", occurred_at=T0)).status_code == 202
    wait_for(lambda: _consent(procfile_relay, email) == "withdrawn", what="newer delivered")
    old = decision(email, "granted", occurred_at=T0 - dt.timedelta(days=1))
    assert procfile_relay.post(old).status_code == 202
    newest = decision(email, "denied", occurred_at=T0 + dt.timedelta(minutes=1))
    assert procfile_relay.post(newest).status_code == 202  # a later decision still flows afterwards
    wait_for(lambda: _consent(procfile_relay, email) == "denied", what="newest delivered")
    values = [
        h["attributes"]["tracking_consent"]
        for h in emulator_contact(procfile_relay.engage, email)["history"]
    ]
    assert "granted" not in values and values[-1] == "denied"


def test_forged_signature_writes_nothing(procfile_relay: ProcfileRelay) -> None:
    email = _email()
    body = decision(email, "granted")
    headers = signed_headers(
        body, msg_id="msg_forged", secret="whsec_Zm9yZ2VkLXNlY3JldC1ub3QtY29uZmlndXJlZA=="
    )
    response = requests.post(
        f"{procfile_relay.url}/webhooks/signup", data=body, headers=headers, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    tampered = procfile_relay.post(
        body
    )  # valid headers for `body`, then the body is changed in flight
    assert tampered.status_code == 202
    sig_ok = signed_headers(body, msg_id="msg_tamper")
    bad = requests.post(
        f"{procfile_relay.url}/webhooks/signup",
        data=body.replace(b"granted", b"denied"),
        headers=sig_ok,
        timeout=10,
    )
    assert bad.status_code == 401
    wait_for(lambda: _consent(procfile_relay, email) == "granted", what="the genuine event only")
    history = emulator_contact(procfile_relay.engage, email)["history"]
    assert [h["attributes"]["tracking_consent"] for h in history] == ["granted"]


def test_engage_outage_then_recovery_loses_nothing(procfile_relay: ProcfileRelay) -> None:
    """Engage is down when the event arrives; it is retried from the ledger once Engage is back."""
    requests.post(f"{procfile_relay.engage}/_emulator/reset", timeout=5)
    outage_dir = procfile_relay.workdir / "outage"
    outage_dir.mkdir()
    # Stop the emulator that the relay points at, then accept an event while it is down.
    subprocess.run(
        ["pkill", "-f", f"engage-emulator --port {procfile_relay.engage_port}"], check=False
    )
    wait_for(lambda: not is_up(f"{procfile_relay.engage}/_emulator/state"), what="emulator down")
    email = _email()
    assert procfile_relay.post(decision(email, "withdrawn")).status_code == 202
    procfile_relay.process.wait_output('"outcome": "transient"', 30)
    _emulator(procfile_relay.engage_port, outage_dir)  # back, with empty state
    wait_for(
        lambda: _consent(procfile_relay, email) == "withdrawn", 30, what="delivery after recovery"
    )


def test_demo_mode_prints_a_ready_command_that_works(tmp_path: Path) -> None:
    """`make run` with no config file: loud demo banner, and its printed command delivers."""
    port = free_port()
    demo = _start_relay(tmp_path, {"CONSENT_RELAY_CONFIG": ""}, port)
    try:
        banner = demo.output()
        assert "DEMO MODE" in banner
        command = re.search(r"^\s+(\S*consent-relay send-test-event .*)$", banner, re.M)
        assert command, banner[:2000]
        sent = subprocess.run(
            shlex.split(command.group(1)),
            capture_output=True,
            text=True,
            env={**os.environ, "PORT": str(port), "CONSENT_RELAY_CONFIG": ""},
            cwd=tmp_path,
            timeout=30,
        )
        assert sent.returncode == 0 and sent.stdout.startswith("202"), sent.stdout + sent.stderr
        wait_for(
            lambda: emulator_contact("http://127.0.0.1:8025", "jane.doe@example.com"),
            what="demo delivery to the emulator",
        )
        _demo_decision_reaches_every_peer(banner)
        _metrics_from_banner_move(banner)
        _operator_page_from_banner_opens(banner, port)
    finally:
        demo.stop()


def _demo_decision_reaches_every_peer(banner: str) -> None:
    """Demo mode fans out to the three peer emulators too, each in its documented form."""
    assert "acoustic-emulator :8026" in banner, banner[:2000]

    def peer(port: int) -> dict[str, Any] | None:
        contacts = requests.get(f"http://127.0.0.1:{port}/_emulator/state", timeout=5).json()
        found: dict[str, Any] | None = contacts["contacts"].get("jane.doe@example.com")
        return found

    def field(port: int, name: str) -> Any:
        return (peer(port) or {}).get("fields", {}).get(name)

    # Each in its documented form: Acoustic attributes, Dotdigital data fields (attribute
    # mode), MoEngage's opt_in_status (the demo's channel_consent mode).
    wait_for(lambda: field(8026, "tracking_consent") == "granted", 60, "demo to Acoustic")
    wait_for(lambda: field(8027, "TRACKING_CONSENT") == "granted", 60, "demo to Dotdigital")
    wait_for(lambda: (peer(8028) or {}).get("channel") == "DOUBLE_OPTED_IN", 60, "demo to MoEngage")


def _metrics_from_banner_move(banner: str) -> None:
    found = re.search(r"Metrics: curl -H '(Authorization: Bearer \S+)' (\S+)", banner)
    assert found, banner[:2000]
    name, value = found.group(1).split(": ", 1)
    text = requests.get(found.group(2), headers={name: value}, timeout=10).text
    accepted = re.search(r'consent_relay_intake_total\{[^}]*outcome="accepted"[^}]*\} (\S+)', text)
    assert accepted and float(accepted.group(1)) >= 1, text[:2000]


def _operator_page_from_banner_opens(banner: str, port: int) -> None:
    found = re.search(r"Operator page: (\S+)\s+user (\S+), password (\S+)", banner)
    assert found, banner[:2000]
    with requests.Session() as browser:
        form = browser.get(f"http://127.0.0.1:{port}/ops/login", timeout=10).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf, form[:2000]
        data = {"username": found.group(2), "password": found.group(3), "csrf_token": csrf[1]}
        page = browser.post(f"http://127.0.0.1:{port}/ops/login", data=data, timeout=10)
    assert page.status_code == 200 and page.url.endswith("/ops"), page.text[:2000]
    assert "engage" in page.text
