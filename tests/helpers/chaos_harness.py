"""The chaos-test harness: a real relay (intake app, Celery workers, beat) against the Engage
emulator in its own process, with helpers to break things and to check the end state.

Every chaos test ends with `Run.assert_converged()`: every contact holds its latest accepted
decision at Engage (or that decision is dead-lettered with a reason), no outbox row is left
pending, and the emulator counted no request over its rate limit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import DeadLetter, Event, Outbox
from service import create_app
from tests.helpers.support import (
    Emulator,
    Process,
    celery_beat,
    celery_worker,
    decision,
    signed_headers,
    wait_for,
    write_config,
)

# requests/second, Engage's documented figure (docs/reference/engage.md#rate-limits)
ENGAGE_LIMIT = 10
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
CHAOS_DELIVERY = {
    "sweep_interval_seconds": 0.5,
    "redispatch_after_seconds": 3,
    "lease_seconds": 60,  # 3 x (5 s slot wait + 1 s connect + 2 s read) + 30 s
    "retry_schedule_seconds": [0.5, 1, 2],
    "not_visible_retry_seconds": 0.5,
    "rate_limited_retry_seconds": 1,
    "rejected_retry_seconds": 0.5,
    "probe_interval_seconds": 1,
}
# The relay paces `1 / (rate x (1 - headroom))` apart: the emulator's strict one-second window
# then counts one request too many only if a request arrives `1 / (1 - headroom) - 1` seconds
# later (relative to its slot) than the request `rate` slots after it: 53 ms at the default
# 5%. These runs kill and restart processes on two shared cores, which stalls a process for
# longer (CI saw one violation in hundreds of requests), so they give the limiter 250 ms.
CHAOS_HEADROOM = 0.2
CHAOS_DESTINATION = {
    "connect_timeout_seconds": 1,
    "read_timeout_seconds": 2,
    "rate_limit_per_second": ENGAGE_LIMIT,
    "rate_limit_headroom": CHAOS_HEADROOM,
}


@dataclass
class Run:
    workdir: Path
    config: Path
    settings: Settings
    emulator: Emulator
    client: Any
    app: Any
    workers: list[Process] = field(default_factory=list)
    beat: Process | None = None
    latest: dict[str, tuple[dt.datetime, int, str]] = field(default_factory=dict)
    accepted: int = 0

    def start_worker(self, concurrency: int = 4) -> Process:
        worker = celery_worker(self.config, self.workdir, concurrency=concurrency)
        self.workers.append(worker)
        return worker

    def start_beat(self) -> None:
        self.beat = celery_beat(self.config, self.workdir)

    def send(self, email: str, consent: str, occurred_at: dt.datetime) -> int:
        body = decision(email, consent, occurred_at=occurred_at)
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        status: int = self.client.post("/webhooks/signup", data=body, headers=headers).status_code
        if status in (200, 202):
            self.accepted += 1
            mark = (occurred_at, self.accepted, consent)
            if email not in self.latest or mark[:2] > self.latest[email][:2]:
                self.latest[email] = mark
        return status

    def pending(self) -> int:
        with self.app.extensions["consent_relay"].sessions() as session:
            count = session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.status == "pending")
            )
            return int(count or 0)

    def wait_settled(self, timeout: float = 180.0) -> None:
        wait_for(lambda: self.pending() == 0, timeout, "every outbox row settled")

    def assert_converged(self, timeout: float = 180.0) -> dict[str, Any]:
        """Every accepted decision is delivered (the latest per contact is what Engage holds)
        or dead-lettered with a reason; no request went over the emulator's rate limit."""
        self.wait_settled(timeout)
        state = self.emulator.state()
        dead = self._dead_letter_events()
        for email, (_occurred, _seq, consent) in self.latest.items():
            if email.lower() in dead:
                assert dead[email.lower()], f"dead letter without a reason for {email}"
                continue
            held = self.emulator.consent(state, email)
            assert held == consent, f"{email}: Engage holds {held!r}, latest is {consent!r}"
        statuses = self._outbox_statuses()
        assert statuses <= {"delivered", "superseded", "dead_lettered"}, statuses
        assert_within_limit(state["faults"])
        return state

    def _dead_letter_events(self) -> dict[str, str]:
        with self.app.extensions["consent_relay"].sessions() as session:
            rows = session.execute(
                select(Event.email, DeadLetter.reason).join(
                    DeadLetter, DeadLetter.event_id == Event.id
                )
            )
            return {email.lower(): reason for email, reason in rows}

    def _outbox_statuses(self) -> set[str]:
        with self.app.extensions["consent_relay"].sessions() as session:
            return set(session.scalars(select(Outbox.status).distinct()))

    def stop(self) -> None:
        for process in [*self.workers, *([self.beat] if self.beat else [])]:
            process.stop()
        self.emulator.process.stop()


def assert_within_limit(faults: dict[str, Any]) -> None:
    """No request over the emulator's limit; the message shows how packed each window was."""
    violations = faults["counters"]["rate_limit_violations"]
    assert violations == 0, f"{violations} over the limit; window spans {faults['violation_spans']}"


def start_run(
    workdir: Path,
    *,
    database_url: str | None,
    broker_url: str | None,
    emulator_flags: tuple[str, ...] = (),
    delivery: dict[str, Any] | None = None,
    extra: str = "",
) -> Run:
    """`extra`: more config tables (raw TOML), e.g. a peer destination (test_chaos_peers.py)."""
    emulator = Emulator(workdir, "--rate-limit", str(ENGAGE_LIMIT), *emulator_flags)
    config = write_config(
        workdir / "consent-relay.toml",
        data_dir=workdir / "var",
        engage_url=emulator.url,
        database_url=database_url,
        broker_url=broker_url,
        queue=f"cr-chaos-{uuid.uuid4().hex[:8]}",
        delivery={**CHAOS_DELIVERY, **(delivery or {})},
        destination=CHAOS_DESTINATION,
        extra=extra,
    )
    settings = load_settings(config, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    return Run(workdir, config, settings, emulator, app.test_client(), app)


def any_urls(request: Any, broker: str) -> tuple[str | None, str | None]:
    """(database, broker) URLs for `broker`: `embedded` gives none at all, the defaults a new
    user runs (SQLite and the embedded broker); `redis` and `rabbitmq` use PostgreSQL."""
    if broker == "embedded":
        return None, None
    database = request.getfixturevalue("own_postgres_url")
    return database, request.getfixturevalue("redis_url" if broker == "redis" else "rabbit_url")


def worker_children(worker: Process) -> list[int]:
    """The prefork pool's child processes of a Celery worker."""
    out = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in out.stdout.split()]


def kill_hard(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
        os.kill(pid, signal.SIGKILL)


def wait_for_requests(run: Run, count: int, timeout: float = 60.0) -> None:
    wait_for(lambda: run.emulator.state()["requests_total"] >= count, timeout, f"{count} requests")


def pause(seconds: float) -> None:
    time.sleep(seconds)


STATES = ("granted", "denied", "withdrawn", "unknown")


def person(index: int) -> str:
    return f"Chaos.Person{index}.{uuid.uuid4().hex[:6]}@Example.com"


def send_wave(run: Run, emails: list[str], count: int, seed: int, start: int = 0) -> None:
    """`count` decisions spread over `emails`, in shuffled order of their occurred_at."""
    rng = random.Random(seed)
    events = [
        (emails[i % len(emails)], rng.choice(STATES), T0 + dt.timedelta(seconds=start + i))
        for i in range(count)
    ]
    rng.shuffle(events)
    for email, consent, occurred_at in events:
        assert run.send(email, consent, occurred_at) == 202


def urls(request: pytest.FixtureRequest, broker: str) -> tuple[str, str]:
    database = request.getfixturevalue("own_postgres_url")
    return database, request.getfixturevalue("redis_url" if broker == "redis" else "rabbit_url")
