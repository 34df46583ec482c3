"""Chaos tests: real workers, brokers and databases; the Engage emulator at 10 requests/second.

Each test breaks something in the middle of a run and then asserts `Run.assert_converged()`:
every contact ends at its latest decision (or that decision is dead-lettered with a reason),
nothing is left pending, and the emulator saw no request over its rate limit.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from relay.ledger.models import DeadLetter, DeliveryState
from tests.helpers.chaos_harness import (
    Run,
    any_urls,
    kill_hard,
    pause,
    person,
    send_wave,
    start_run,
    urls,
    wait_for_requests,
    worker_children,
)
from tests.helpers.support import Process, free_port, require_service, wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize("broker", ["embedded", "redis", "rabbitmq"])
def test_kill_9_of_workers_in_the_middle_of_writes(
    request: pytest.FixtureRequest, run_dir: Path, broker: str
) -> None:
    database, broker_url = any_urls(request, broker)
    run = start_run(
        run_dir,
        database_url=database,
        broker_url=broker_url,
        emulator_flags=("--latency-ms", "150"),
    )
    try:
        worker = run.start_worker()
        run.start_beat()
        emails = [person(i) for i in range(40)]
        send_wave(run, emails, 200, seed=1)
        wait_for_requests(run, 15)
        children = worker_children(worker)
        assert children, "the worker has a prefork pool"
        for pid in children[:2]:
            kill_hard(pid)  # pool children in the middle of their writes
        wait_for_requests(run, 40)
        worker.stop(sig=9)  # the whole worker, main process included
        send_wave(run, emails, 100, seed=2, start=1000)  # accepted while no worker runs
        run.start_worker()
        run.assert_converged()
    finally:
        run.stop()


class PrivateRedis:
    """A redis-server of this test's own, so that restarting it disturbs nothing else."""

    def __init__(self, workdir: Path) -> None:
        require_service("Redis", "127.0.0.1", 6379)  # the machine's server proves the binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: Process | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.process = Process(argv, {}, self.workdir, self.workdir / f"redis-{self.port}.log")
        self.process.wait_output("Ready to accept connections")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(sig=9)


@pytest.fixture
def private_redis(run_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(run_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restart_during_a_run(
    request: pytest.FixtureRequest, run_dir: Path, private_redis: PrivateRedis
) -> None:
    run = start_run(
        run_dir,
        database_url=request.getfixturevalue("postgres_url"),
        broker_url=private_redis.url,
        emulator_flags=("--latency-ms", "100"),
    )
    try:
        run.start_worker()
        run.start_beat()
        emails = [person(i) for i in range(30)]
        send_wave(run, emails, 120, seed=3)
        wait_for_requests(run, 15)
        private_redis.stop()  # every queued message and the limiter's state are gone
        send_wave(run, emails, 60, seed=4, start=1000)  # accepted while the broker is down
        pause(3)
        private_redis.start()
        run.assert_converged()
    finally:
        run.stop()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def test_rabbitmq_restart_during_a_run(request: pytest.FixtureRequest, run_dir: Path) -> None:
    database, broker_url = urls(request, "rabbitmq")
    run = start_run(
        run_dir,
        database_url=database,
        broker_url=broker_url,
        emulator_flags=("--latency-ms", "100"),
    )
    try:
        run.start_worker()
        run.start_beat()
        emails = [person(i) for i in range(30)]
        send_wave(run, emails, 120, seed=5)
        wait_for_requests(run, 15)
        rabbitmqctl("stop_app")  # the broker goes away: connections drop
        try:
            send_wave(run, emails, 60, seed=6, start=1000)
            pause(3)
        finally:
            rabbitmqctl("start_app")
        run.assert_converged()
    finally:
        run.stop()


def test_engage_outage_then_recovery(request: pytest.FixtureRequest, run_dir: Path) -> None:
    database, broker_url = urls(request, "redis")
    run = start_run(run_dir, database_url=database, broker_url=broker_url)
    try:
        run.start_worker()
        run.start_beat()
        emails = [person(i) for i in range(30)]
        run.emulator.faults(error_rate=1.0, error_status=503, hang_rate=0.2, hang_seconds=3)
        send_wave(run, emails, 90, seed=7)
        wait_for_requests(run, 30)
        pause(5)  # some seconds of outage: every write fails or hangs past the timeout
        assert run.pending() > 0
        run.emulator.faults(error_rate=0.0, hang_rate=0.0)
        state = run.assert_converged()
        assert state["faults"]["counters"]["injected_errors"] > 0
    finally:
        run.stop()


def test_burst_of_1000_over_100_contacts_with_5xx_and_slow_visibility(
    request: pytest.FixtureRequest, run_dir: Path
) -> None:
    # RabbitMQ: the shared rate limit then lives in PostgreSQL (Redis is covered above).
    database, broker_url = urls(request, "rabbitmq")
    run = start_run(
        run_dir,
        database_url=database,
        broker_url=broker_url,
        emulator_flags=("--error-rate", "0.1", "--visibility-delay", "1.5", "--seed", "11"),
    )
    try:
        run.start_worker()
        run.start_beat()
        emails = [person(i) for i in range(100)]
        send_wave(run, emails, 1000, seed=8)
        state = run.assert_converged(timeout=300)
        counters = state["faults"]["counters"]
        assert counters["injected_errors"] > 0
        # Coalescing: far fewer calls than decisions (update, create and retries included).
        assert counters["api_requests"] < 1000
    finally:
        run.stop()


def test_auth_failure_pauses_then_fixed_credentials_resume_with_nothing_lost(
    run_dir: Path,
) -> None:
    run = start_run(run_dir, database_url=None, broker_url=None)  # embedded: SQLite + files
    try:
        run.start_worker()
        run.start_beat()
        run.emulator.faults(auth_failure=403)
        emails = [person(i) for i in range(10)]
        send_wave(run, emails, 30, seed=9)
        wait_for(lambda: _readiness(run) == "paused", 60, "the destination paused")
        pause(2)  # writes already past their pause check (at most one per worker) finish
        writes_before = _writes(run)
        pause(4)  # paused: only probes reach Engage, no writes
        assert _writes(run) == writes_before
        assert run.pending() > 0
        with run.app.extensions["consent_relay"].sessions() as session:
            assert session.scalars(select(DeadLetter)).all() == []
            attempts = session.scalars(select(DeliveryState.attempts)).all()
        assert set(attempts) <= {0}  # no retries were burnt
        run.emulator.faults(auth_failure=None)  # the account is fixed
        run.assert_converged()
        assert _readiness(run) == "active"
    finally:
        run.stop()


def _readiness(run: Run) -> str:
    body = run.client.get("/readyz").get_json()
    return str(body["checks"]["destinations"].get("engage"))


def _writes(run: Run) -> int:
    requests = run.emulator.state()["requests"]
    return sum(1 for entry in requests if not entry["path"].endswith("getApiVersion"))
