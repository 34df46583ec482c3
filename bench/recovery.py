"""Recovery: from SIGKILL of a Celery pool process in the middle of a write to the delivery of
every contact whose lease was held at that moment (the killed process's included).

Decisions are posted through the real intake while no worker runs; then beat and a worker
(2 pool processes, as the Procfile runs it) start against an Engage emulator that answers
each call in 400 ms, so that writes are in flight. At the first moment a lease is held, one
pool process is killed. The clock stops when every contact leased at the kill has been
delivered after it. The lease itself is 180 s (the default): a figure near it would mean the
lost run's leases were waited out instead of freed (workers/lost.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from bench import env
from bench.delivery import Spec, _decisions, _feed
from bench.procs import wait_for
from service.db import make_engine
from service.models import DeliveryState

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
        bodies, _latest = _decisions(Spec("recovery", 60, 30, 2, SLOW_ENGAGE))
        _feed(relay, bodies)
        env.celery(stack, relay, "beat")
        worker = env.celery(stack, relay, "worker", 2)
        wait_for(lambda: bool(_held(engine)), 60, "a lease held by a pool process")
        held = _held(engine)
        killed_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        _kill_one_child(worker.pid)
        wait_for(lambda: _all_delivered_after(engine, held, killed_at), 240, "recovery")
        return time.monotonic() - started


def _held(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        query = select(DeliveryState.contact_id).where(DeliveryState.lease_owner.is_not(None))
        return [int(contact) for contact in conn.execute(query).scalars()]


def _all_delivered_after(engine: Engine, contacts: list[int], after: dt.datetime) -> bool:
    with engine.connect() as conn:
        query = select(DeliveryState.delivered_at).where(DeliveryState.contact_id.in_(contacts))
        times = list(conn.execute(query).scalars())
    return len(times) == len(contacts) and all(t is not None and _utc(t) > after for t in times)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _kill_one_child(worker_pid: int) -> None:
    out = subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True)
    children = [int(pid) for pid in out.stdout.split()]
    if not children:
        raise RuntimeError("the worker has no pool process to kill")
    os.kill(children[0], signal.SIGKILL)
