"""Delivery lanes (relay/messaging/lanes.py) on PostgreSQL + Redis, with the Procfile's two worker
processes:

- isolation: Engage's drain time alone, and with a slow Dotdigital destination configured
  beside it (2 calls/s, a look-up and an update per contact, so one contact a second), for
  the same decisions; the ratio alone/with is the target (at least 0.9), with no rate-limit
  violation at either emulator;
- withdrawals first: while a backlog of grants for Engage drains at its pace, withdrawals
  are posted through the intake one by one; their accepted-to-delivered times (the ledger's
  received_at to delivered_at) are reported, p99 against the 5 s target.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import Engine, func, select

from bench import env, load
from bench.delivery import LATENCY, feed
from bench.procs import wait_for
from bench.sizes import T0, Sizes, decision_body
from emulators import dotdigital
from relay.ledger.db import make_engine
from relay.ledger.models import DeliveryState, Event, Outbox

ENGAGE = ("--rate-limit", "10", *LATENCY)
SLOW_DOTDIGITAL = {
    "kind": "dotdigital",
    "username": dotdigital.USERNAME,
    "password": dotdigital.PASSWORD,
    "rate_limit_per_second": 2,
}
DELIVERY = {"sweep_interval_seconds": 1}
ISOLATION_TARGET = 0.9
WITHDRAWAL_TARGET_SECONDS = 5.0


@dataclass
class Isolation:
    contacts: int
    alone_seconds: float
    with_slow_seconds: float
    violations: dict[str, int]

    @property
    def ratio(self) -> float:
        return self.alone_seconds / self.with_slow_seconds if self.with_slow_seconds else 0.0


@dataclass
class Withdrawals:
    backlog: int
    seconds: list[float]  # accepted-to-delivered of each withdrawal
    violations: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def isolation(workdir: Path, sizes: Sizes) -> Isolation:
    contacts = sizes.unlimited_contacts
    print(f"lanes: Engage alone and beside a slow Dotdigital, {contacts} contacts")
    alone, violations = _drain(workdir / "alone", contacts, slow=False)
    with_slow, slow_violations = _drain(workdir / "with-slow", contacts, slow=True)
    return Isolation(contacts, alone, with_slow, {**violations, **slow_violations})


def _drain(workdir: Path, contacts: int, slow: bool) -> tuple[float, dict[str, int]]:
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(stack, workdir, "engage", *ENGAGE)
        others = {}
        if slow:
            url = env.emulator(
                stack,
                workdir,
                "dotdigital",
                "--any-contact",
                "--rate-limit",
                "2",
                command="dotdigital",
            )
            others["dotdigital"] = {**SLOW_DOTDIGITAL, "base_url": url}
        relay = env.relay(stack, workdir, env.PG_REDIS, engage, DELIVERY, others=others)
        engine = _engine(stack, relay)
        feed(relay, [_body(i, "granted") for i in range(contacts)])
        env.celery(stack, relay, "beat")
        env.celery(stack, relay, "worker", 2)
        started = time.monotonic()
        wait_for(lambda: _pending(engine, "engage") == 0, 600, "Engage's contacts")
        drained = time.monotonic() - started
        found = {"engage": _violations(engage)}
        if slow:
            found["dotdigital"] = _violations(others["dotdigital"]["base_url"])
        return drained, found


def withdrawals(workdir: Path, sizes: Sizes) -> Withdrawals:
    backlog, count = sizes.decisions, max(5, sizes.recovery_kills * 10)
    print(f"lanes: {count} withdrawals behind {backlog} grants for Engage")
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(stack, workdir, "engage", *ENGAGE)
        relay = env.relay(stack, workdir, env.PG_REDIS, engage, DELIVERY)
        engine = _engine(stack, relay)
        feed(relay, [_body(i, "granted") for i in range(backlog)])
        _web, url = env.gunicorn(stack, relay, env.REAL_APP, "web")
        env.celery(stack, relay, "beat")
        env.celery(stack, relay, "worker", 2)
        builder = load.Webhooks("127.0.0.1", int(url.rsplit(":", 1)[1]), env.SECRET)
        for i in range(count):
            time.sleep(0.5)
            _post(builder, _body(backlog + i, "withdrawn"))
        ids = [f"lane-{backlog + i}" for i in range(count)]
        wait_for(lambda: len(_latencies(engine, ids)) == count, 300, "the withdrawals")
        return Withdrawals(backlog, _latencies(engine, ids), _violations(engage))


def _post(builder: load.Webhooks, body: bytes) -> None:
    result = load.run(builder, [body], load.Plan(processes=1))
    if result.errors or result.count != 1:
        raise RuntimeError(f"a withdrawal was not accepted: {dict(result.statuses)}")


def _email(i: int) -> str:
    return f"Lane.{i}@Example.org"


def _body(i: int, consent: str) -> bytes:
    return decision_body(_email(i), consent, T0 + dt.timedelta(seconds=i), f"lane-{i}")


def _engine(stack: contextlib.ExitStack, relay: env.Relay) -> Engine:
    engine = make_engine(relay.database_url.replace("postgresql:", "postgresql+psycopg:"))
    stack.callback(engine.dispose)
    return engine


def _pending(engine: Engine, destination: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(
            Outbox.status == "pending", Outbox.destination == destination
        )
        return int(conn.execute(query).scalar_one())


def _latencies(engine: Engine, source_ids: list[str]) -> list[float]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.received_at, DeliveryState.delivered_at)
            .join(DeliveryState, DeliveryState.delivered_event_id == Event.id)
            .where(Event.consent_source_id.in_(source_ids))
        )
        return [(delivered - received).total_seconds() for received, delivered in rows]


def _violations(url: str) -> int:
    state = requests.get(f"{url}/_emulator/state", timeout=60).json()
    return int(state["faults"]["counters"]["rate_limit_violations"])
