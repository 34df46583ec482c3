"""Recovery: from SIGKILL of a Celery pool process in the middle of a write to the delivery of
every contact whose lease was held at that moment (the killed process's included).

Decisions are posted through the real intake while no worker runs; then beat and a worker
(2 pool processes, as the Procfile runs it) start against an Engage emulator that answers
each call in 400 ms, so that writes are in flight. At the first moment a lease is held, one
pool process is killed. The clock stops when no contact leased at the kill owes anything
(no pending outbox row): each holds its latest decision. The lease itself is 180 s (the
default): a figure near it would mean the lost run's leases were waited out instead of freed
(workers/lost.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from bench import env
from bench.delivery import Spec, decisions, feed
from bench.procs import wait_for
from relay.ledger.db import make_engine
from relay.ledger.models import DeliveryState, Outbox

SLOW_ENGAGE = ("--rate-limit", "10", "--latency-ms", "400")
RECOVERY_TARGET_SECONDS = 15.0


@dataclass
class Recovery:
    backend: str
    seconds: list[float]  # one per kill

    @property
    def worst(self) -> float:
        return max(self.seconds) if self.seconds else float("nan")


def run(workdir: Path, backend: env.Backend, kills: int) -> Recovery:
    print(f"recovery: {backend.label}: {kills} pool process kill(s)")
    seconds = [_once(workdir / f"kill-{i}", backend) for i in range(kills)]
    return Recovery(backend.label, seconds)


def _once(workdir: Path, backend: env.Backend) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(stack, workdir, "emulator", *SLOW_ENGAGE)
        relay = env.relay(stack, workdir, backend, engage, {"sweep_interval_seconds": 1})
        url = relay.database_url.replace("postgresql:", "postgresql+psycopg:")
        engine = make_engine(url)
        stack.callback(engine.dispose)
        bodies, _latest = decisions(Spec("recovery", 60, 30, 2, SLOW_ENGAGE))
        feed(relay, bodies)
        env.celery(stack, relay, "beat")
        worker = env.celery(stack, relay, "worker", 2)
        wait_for(lambda: bool(_held(engine)), 60, "a lease held by a pool process")
        held = _held(engine)
        started = time.monotonic()
        _kill_one_child(worker.pid)
        wait_for(lambda: _nothing_owed(engine, held), 240, "recovery")
        return time.monotonic() - started


def _held(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        query = select(DeliveryState.contact_id).where(DeliveryState.lease_owner.is_not(None))
        return [int(contact) for contact in conn.execute(query).scalars()]


def _nothing_owed(engine: Engine, contacts: list[int]) -> bool:
    """True once none of `contacts` has a pending outbox row: each holds its latest decision
    at Engage (the killed run's contact only after its lease was freed and it was re-sent)."""
    with engine.connect() as conn:
        query = select(func.count()).where(
            Outbox.contact_id.in_(contacts), Outbox.status == "pending"
        )
        return int(conn.execute(query).scalar_one()) == 0


def _kill_one_child(worker_pid: int) -> None:
    out = subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True)
    children = [int(pid) for pid in out.stdout.split()]
    if not children:
        raise RuntimeError("the worker has no pool process to kill")
    os.kill(children[0], signal.SIGKILL)
