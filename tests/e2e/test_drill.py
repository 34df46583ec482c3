"""The delivery drill, driven from outside: `engage-emulator` at 10 requests/second with 5xx and
hangs, `consent-relay run` (web, worker, beat under honcho) on PostgreSQL and Redis, signed
webhooks over HTTP, and a worker process killed with SIGKILL in the middle of the run.

It ends with every contact at its latest decision (or dead-lettered with a reason), nothing
pending, and no request over Engage's limit. `make drill` runs only this test.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select

from relay.config.loader import normalise_database_url
from relay.ledger.models import DeadLetter, Event, Outbox
from tests.helpers.support import (
    Process,
    decision,
    free_port,
    is_up,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STATES = ("granted", "denied", "withdrawn", "unknown")
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
EMULATOR_FLAGS = ["--rate-limit", "10", "--error-rate", "0.1", "--hang-rate", "0.03"]
EMULATOR_FLAGS += ["--hang-seconds", "4", "--seed", "5"]
DELIVERY = {
    "sweep_interval_seconds": 0.5,
    "redispatch_after_seconds": 3,
    "lease_seconds": 60,
    "retry_schedule_seconds": [0.5, 1, 2],
    "not_visible_retry_seconds": 0.5,
    "rate_limited_retry_seconds": 1,
}
DESTINATION = {"connect_timeout_seconds": 1, "read_timeout_seconds": 2}


def _pool_children() -> list[int]:
    """Prefork pool processes: the celery processes whose parent is a celery process (honcho
    runs the worker under `sh -c`, whose command line matches too)."""
    found = subprocess.run(
        ["pgrep", "-f", "celery -A workers.main worker"], capture_output=True, text=True
    ).stdout.split()
    celery = {int(pid) for pid in found if _comm(int(pid)) != "sh"}
    return sorted(pid for pid in celery if _parent(pid) in celery)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def test_drill_rate_limited_faulty_engage_and_a_killed_worker(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    engage_port, port = free_port(), free_port()
    engage = f"http://127.0.0.1:{engage_port}"
    emulator = Process(
        [str(BIN / "engage-emulator"), "--port", str(engage_port), *EMULATOR_FLAGS],
        dict(os.environ),
        tmp_path,
        tmp_path / "emulator.log",
    )
    wait_for(lambda: is_up(f"{engage}/_emulator/faults"), what="emulator")
    config = write_config(
        tmp_path / "relay.toml",
        data_dir=tmp_path / "var",
        engage_url=engage,
        database_url=postgres_url,
        broker_url=redis_url,
        queue=f"cr-drill-{uuid.uuid4().hex[:8]}",
        delivery=DELIVERY,
        destination=DESTINATION,
    )
    env = {"CONSENT_RELAY_CONFIG": str(config), "PORT": str(port), "WORKER_CONCURRENCY": "4"}
    argv = [str(BIN / "consent-relay"), "run", "--procfile", str(REPO / "Procfile")]
    relay = Process(argv, {**os.environ, **env}, tmp_path, tmp_path / "run.log")
    try:
        wait_for(lambda: is_up(f"http://127.0.0.1:{port}/healthz"), 60, "web /healthz")
        relay.wait_output("ready.", 60)
        latest = _send(f"http://127.0.0.1:{port}", 300, 60)
        wait_for(lambda: _requests_total(engage) >= 30, 60, "writes under way")
        children = _pool_children()
        assert children, "no worker pool process to kill"
        os.kill(children[0], signal.SIGKILL)  # the worker's main process replaces it
        _assert_converged(postgres_url, engage, latest)
        assert relay.proc.poll() is None, "honcho stopped: a process died for good"
        assert children[0] not in _pool_children()
    finally:
        relay.stop(signal.SIGTERM)
        emulator.stop()


def _send(url: str, count: int, contacts: int) -> dict[str, str]:
    rng = random.Random(13)
    emails = [f"Drill.{i}.{uuid.uuid4().hex[:6]}@Example.org" for i in range(contacts)]
    events = [
        (emails[i % contacts], rng.choice(STATES), T0 + dt.timedelta(seconds=i))
        for i in range(count)
    ]
    rng.shuffle(events)
    latest: dict[str, tuple[dt.datetime, str]] = {}
    with requests.Session() as http:
        for email, consent, occurred_at in events:
            body = decision(email, consent, occurred_at=occurred_at)
            headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
            answer = http.post(f"{url}/webhooks/signup", data=body, headers=headers, timeout=10)
            assert answer.status_code == 202, answer.text
            if email not in latest or occurred_at > latest[email][0]:
                latest[email] = (occurred_at, consent)
    return {email: consent for email, (_, consent) in latest.items()}


def _requests_total(engage: str) -> int:
    faults = requests.get(f"{engage}/_emulator/faults", timeout=5).json()
    return int(faults["counters"]["api_requests"])


def _assert_converged(database_url: str, engage: str, latest: dict[str, str]) -> None:
    engine = create_engine(normalise_database_url(database_url))
    try:
        with engine.connect() as connection:

            def pending() -> int:
                query = select(func.count()).select_from(Outbox).where(Outbox.status == "pending")
                return int(connection.execute(query).scalar_one())

            wait_for(lambda: pending() == 0, 240, "every outbox row settled")
            dead = dict(
                connection.execute(
                    select(Event.email, DeadLetter.reason).join(
                        DeadLetter, DeadLetter.event_id == Event.id
                    )
                ).all()
            )
    finally:
        engine.dispose()
    state = requests.get(f"{engage}/_emulator/state", timeout=10).json()
    for email, consent in latest.items():
        if email in dead:
            assert dead[email], email
            continue
        assert state["contacts"][email.lower()]["attributes"]["tracking_consent"] == consent
    counters = state["faults"]["counters"]
    assert counters["rate_limit_violations"] == 0
    assert counters["injected_errors"] > 0 and counters["hangs"] > 0
