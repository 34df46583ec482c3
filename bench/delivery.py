"""Delivery: decisions are posted through the real intake (HTTP, gunicorn) on PostgreSQL +
Redis while no worker runs; the web process is then stopped, beat and one Celery worker are
started, and the clock runs from the worker's "ready." until the ledger has no pending outbox
row. The Engage emulator answers every call in 50 ms; its counters give the calls made and
any rate-limit violation. Every contact starts unknown to Engage (update, then create)."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, func, select

from bench import env, load
from bench.procs import CpuSnapshot, tree_peak_rss, wait_for
from bench.sizes import CONNECTIONS, STATES, T0, Sizes, decision_body
from relay.config.settings import DestinationSettings
from relay.ledger.db import make_engine
from relay.ledger.models import Outbox

LATENCY = ("--latency-ms", "50")
ENGAGE_LIMIT = 10  # Engage's documented limit; the relay's default rate_limit_per_second
DELIVERY = {"sweep_interval_seconds": 1}  # deferred work is picked up within a second
UNLIMITED = {"rate_limit_per_second": 1_000_000}


DEFAULT_HEADROOM = DestinationSettings.rate_limit_headroom


@dataclass(frozen=True)
class Spec:
    name: str
    decisions: int
    contacts: int
    concurrency: int  # worker processes (celery --concurrency)
    emulator_flags: tuple[str, ...]
    destination: dict[str, float] = field(default_factory=dict)

    @property
    def headroom(self) -> float:
        """How far below the limit the relay paces (its default unless the spec sets one)."""
        return self.destination.get("rate_limit_headroom", DEFAULT_HEADROOM)


@dataclass
class Delivered:
    spec: Spec
    drain_seconds: float
    api_requests: int
    calls: dict[str, int]  # update / create / get, as the emulator counted them
    violations: int
    call_times: list[float]  # each Engage call, seconds after the first
    wrong_contacts: int  # contacts whose Engage value is not their latest decision
    worker_rss_kib: list[int]
    beat_rss_kib: list[int]
    others_cpu: float = 0.0  # share of the machine other processes used during the drain
    first_call_after: float = 0.0  # seconds from the worker's "ready." to Engage's first call

    @property
    def call_rate(self) -> float:
        span = self.call_times[-1] if len(self.call_times) > 1 else 0.0
        return (len(self.call_times) - 1) / span if span > 0 else 0.0

    @property
    def pace(self) -> float:
        """The relay's own pace: the limit less its headroom (calls per second)."""
        return ENGAGE_LIMIT * (1 - self.spec.headroom)

    def rate_between(self, low: float, high: float) -> float:
        """Calls per second between the calls at shares `low` and `high` of the run (0..1):
        the middle of the run, without its start and its tail."""
        times = self.call_times
        first, last = round(low * (len(times) - 1)), round(high * (len(times) - 1))
        span = times[last] - times[first]
        return (last - first) / span if span > 0 else 0.0

    @property
    def tail_seconds(self) -> float:
        """From Engage's last call to the ledger showing no pending row."""
        return self.drain_seconds - self.first_call_after - (self.call_times or [0.0])[-1]


def specs(sizes: Sizes) -> list[Spec]:
    limited = ("--rate-limit", str(ENGAGE_LIMIT), *LATENCY)
    n = sizes.unlimited_contacts
    found = [
        Spec("rate limited 10/s", sizes.decisions, sizes.contacts, 2, limited),
        Spec("no rate limit, 1 process", n, n, 1, LATENCY, UNLIMITED),
        Spec("no rate limit, 4 processes", n, n, 4, LATENCY, UNLIMITED),
    ]
    if sizes.name == "full":  # the quick run stays under 5 minutes without it
        # The default headroom (5%) caps the pace at 95% of the limit; this row shows what a
        # tighter one gives on this machine, violations included.
        tighter = {"rate_limit_headroom": 0.02}
        name = "rate limited 10/s, headroom 2%"
        found.insert(1, Spec(name, sizes.decisions, sizes.contacts, 2, limited, tighter))
    return found


def run(workdir: Path, spec: Spec) -> Delivered:
    print(f"delivery: {spec.name}: {spec.decisions} decisions, {spec.contacts} contacts")
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(stack, workdir, "emulator", *spec.emulator_flags)
        relay = env.relay(stack, workdir, env.PG_REDIS, engage, DELIVERY, spec.destination)
        engine = make_engine(relay.database_url.replace("postgresql:", "postgresql+psycopg:"))
        stack.callback(engine.dispose)
        bodies, latest = decisions(spec)
        feed(relay, bodies)
        if _pending(engine) != spec.decisions:
            raise RuntimeError(f"{_pending(engine)} pending rows after {spec.decisions} posts")
        beat = env.celery(stack, relay, "beat")
        worker = env.celery(stack, relay, "worker", spec.concurrency)
        start, ready_at, cpu = time.monotonic(), time.time(), CpuSnapshot.take()
        wait_for(lambda: _pending(engine) == 0, _timeout(spec), "the outbox to drain")
        drain, others = time.monotonic() - start, CpuSnapshot.take().others_since(cpu)
        rss = tree_peak_rss(worker.pid), tree_peak_rss(beat.pid)
        result, first_call = _result(spec, engage, latest, drain, rss)
        result.others_cpu, result.first_call_after = others, first_call - ready_at
        return result


def _timeout(spec: Spec) -> float:
    rate = ENGAGE_LIMIT * 0.9 if spec.destination != UNLIMITED else 5.0 * spec.concurrency
    return 2 * spec.contacts * 2 / rate + 120  # two calls per new contact


def decisions(spec: Spec) -> tuple[list[bytes], dict[str, str]]:
    """Decisions spread over the contacts in random order; the latest one of each contact."""
    rng = random.Random(7)
    run = rng.randrange(16**6)
    emails = [f"Delivery.{i}.{run:06x}@Example.org" for i in range(spec.contacts)]
    events = [
        (emails[i % spec.contacts], rng.choice(STATES), T0 + dt.timedelta(seconds=i))
        for i in range(spec.decisions)
    ]
    rng.shuffle(events)
    latest: dict[str, tuple[dt.datetime, str]] = {}
    for email, consent, occurred_at in events:
        if email not in latest or occurred_at > latest[email][0]:
            latest[email] = (occurred_at, consent)
    bodies = [decision_body(e, c, at, f"delivery-{i}") for i, (e, c, at) in enumerate(events)]
    return bodies, {email.lower(): consent for email, (_, consent) in latest.items()}


def feed(relay: env.Relay, bodies: list[bytes]) -> None:
    """Through the real intake; the web process stops before the workers start."""
    with contextlib.ExitStack() as stack:
        _web, url = env.gunicorn(stack, relay, env.REAL_APP, "web-feed")
        builder = load.Webhooks("127.0.0.1", int(url.rsplit(":", 1)[1]), env.SECRET)
        fed = load.run(builder, bodies, load.Plan(processes=CONNECTIONS))
    if fed.errors or fed.count != len(bodies):
        raise RuntimeError(f"feeding failed: {dict(fed.statuses)}")


def _pending(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(Outbox).where(Outbox.status == "pending")
        return int(conn.execute(query).scalar_one())


def _result(
    spec: Spec,
    engage: str,
    latest: dict[str, str],
    drain: float,
    rss: tuple[list[int], list[int]],
) -> tuple[Delivered, float]:
    """The run's result, and the wall-clock time of Engage's first call."""
    state: dict[str, Any] = requests.get(f"{engage}/_emulator/state", timeout=60).json()
    counters = state["faults"]["counters"]
    times = sorted(dt.datetime.fromisoformat(r["at"]).timestamp() for r in state["requests"])
    contacts = state["contacts"]
    wrong = sum(
        1
        for email, consent in latest.items()
        if contacts.get(email, {}).get("attributes", {}).get("tracking_consent") != consent
    )
    result = Delivered(
        spec=spec,
        drain_seconds=drain,
        api_requests=int(counters["api_requests"]),
        calls=dict(state["counts"]),
        violations=int(counters["rate_limit_violations"]),
        call_times=[t - times[0] for t in times],
        wrong_contacts=wrong,
        worker_rss_kib=rss[0],
        beat_rss_kib=rss[1],
    )
    return result, times[0] if times else 0.0


@dataclass
class Capacity:
    clients: int
    result: load.LoadResult


def emulator_capacity(workdir: Path, clients: int, seconds: float) -> Capacity:
    """The emulator alone (50 ms a call), driven by `clients` closed-loop connections making
    contact/create calls: what one connection, and N of them, can get through it."""
    print(f"delivery: the emulator alone, {clients} client(s)")
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(stack, workdir, f"emulator-alone-{clients}", *LATENCY)
        port = int(engage.rsplit(":", 1)[1])
        builder = load.EngageCalls("127.0.0.1", port, env.ENGAGE_USER, env.ENGAGE_PASSWORD)
        count = int(200 * clients * (seconds + 1))
        bodies = [b'{"emailAddress": "alone.%d@example.org"}' % i for i in range(count)]
        plan = load.Plan(warmup=1.0, duration=seconds, processes=clients)
        return Capacity(clients, load.run(builder, bodies, plan))
