"""Recovery: from SIGKILL of a Celery pool process in the middle of a write to the delivery of
the contact that process held (issue 13: "from SIGKILL to that contact's delivery").

Decisions are posted through the real intake while no worker runs; then beat and a worker
(2 pool processes, as the Procfile runs it) start against an Engage emulator that answers
each call in 400 ms, so that writes are in flight. When both pool processes hold a lease,
one of them is killed. The killed run's contact is the one whose lease is let go while it
still owes a write (the live run lets its lease go only after delivering); the clock stops
when it owes nothing (no pending outbox row). The lease itself is 180 s (the default): a
figure near it would mean the lost run's leases were waited out instead of freed
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
        # Both pool processes mid-write, so the one killed surely held a contact.
        wait_for(lambda: len(_held(engine)) >= 2, 60, "a lease held by each pool process")
        held = _held(engine)
        started = time.monotonic()
        _kill_one_child(worker.pid)
        lost = wait_for(lambda: _let_go_owing(engine, held), 240, "the lost run's lease freed")
        assert lost is not None  # wait_for returns a true value or raises
        wait_for(lambda: _owed(engine, lost) == 0, 240, "the lost run's contact delivered")
        return time.monotonic() - started


def _held(engine: Engine) -> dict[int, str]:
    """Leased contacts and their lease owners (`<task id>/<retries>`)."""
    with engine.connect() as conn:
        query = select(DeliveryState.contact_id, DeliveryState.lease_owner).where(
            DeliveryState.lease_owner.is_not(None)
        )
        return {int(contact): str(owner) for contact, owner in conn.execute(query)}


def _let_go_owing(engine: Engine, held: dict[int, str]) -> int | None:
    """The contact of `held` whose lease its owner no longer holds while it still owes a
    write: the killed run's (a live run delivers before it lets go), else None."""
    now = _held(engine)
    for contact, owner in held.items():
        if now.get(contact) != owner and _owed(engine, contact) > 0:
            return contact
    return None


def _owed(engine: Engine, contact: int) -> int:
    """The contact's pending outbox rows: 0 once it holds its latest decision at Engage."""
    with engine.connect() as conn:
        query = select(func.count()).where(Outbox.contact_id == contact, Outbox.status == "pending")
        return int(conn.execute(query).scalar_one())


def _kill_one_child(worker_pid: int) -> None:
    out = subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True)
    children = [int(pid) for pid in out.stdout.split()]
    if not children:
        raise RuntimeError("the worker has no pool process to kill")
    os.kill(children[0], signal.SIGKILL)
