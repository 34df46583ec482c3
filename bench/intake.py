"""Intake: the real app (signature, validation, ledger write, enqueue) under gunicorn, next to
four baselines under the same gunicorn settings: a bare Flask endpoint (the framework's
ceiling), a naive relay that calls Engage (the emulator, 100 ms a call) inside the request,
the durable ledger write alone on PostgreSQL (the floor of any relay that answers after the
commit) and the plain Celery relay (bench/plain_celery.py: standardwebhooks, marshmallow and
`.delay()` on Redis, no ledger).
Closed loop at 4 connections for every target; at 16 too for the plain Celery relay, the
ledger write and the relay on PostgreSQL + Redis (the load the plain-Celery target is stated
at). No Celery worker runs during these runs: only the web process is measured."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import env, load
from bench.procs import CpuSnapshot, tree_peak_rss
from bench.sizes import (
    CONNECTIONS,
    INTAKE_CONTACTS,
    OPEN_LOOP_RATE,
    WIDE,
    Sizes,
    intake_bodies,
)
from bench.sizes import intake_email as email

CLOSED_CEILING = 2000  # requests/s a closed-loop run is given bodies for (more: "exhausted")
OPEN_THREADS = (2, 8)  # open loop: load processes x connections each
NAIVE_LATENCY_MS = 100
NAIVE = f"naive relay, Engage inline {NAIVE_LATENCY_MS} ms (baseline 2)"
LEDGER_ONLY = "ledger write only (baseline 3)"
PLAIN_CELERY = "plain Celery relay (baseline 4)"


@dataclass
class IntakeRow:
    name: str
    backend: str
    mode: str
    result: load.LoadResult
    others_cpu: float  # share of the machine used by processes the bench did not start
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU per request: web, PostgreSQL...
    web_rss_kib: list[int] = field(default_factory=list)  # the gunicorn tree, master first


@dataclass(frozen=True)
class Target:
    name: str
    app: str
    backend: env.Backend | None  # None: no ledger (a baseline that only reads the config)
    wide: bool = False  # also the closed loop at WIDE connections


TARGETS = (
    Target("bare Flask (baseline 1)", "bench.apps:bare_app()", None),
    Target(
        f"naive relay, Engage inline {NAIVE_LATENCY_MS} ms (baseline 2)",
        "bench.apps:naive_app()",
        None,
    ),
    Target(LEDGER_ONLY, "bench.apps:ledger_app()", env.PG_REDIS, wide=True),
    Target(PLAIN_CELERY, "bench.plain_celery:plain_celery_app()", env.PG_REDIS, wide=True),
    Target("consent relay", env.REAL_APP, env.EMBEDDED),
    Target("consent relay", env.REAL_APP, env.PG_REDIS, wide=True),
)


def run(workdir: Path, sizes: Sizes) -> list[IntakeRow]:
    rows: list[IntakeRow] = []
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(
            stack, workdir, "emulator-intake", "--latency-ms", str(NAIVE_LATENCY_MS)
        )
        _seed_contacts(engage)
        for index, target in enumerate(TARGETS):
            print(f"intake: {target.name} ({_backend_label(target)})")
            rows += _run_target(workdir / f"intake-{index}", engage, target, sizes)
    return rows


def _backend_label(target: Target) -> str:
    return target.backend.label if target.backend else "-"


def _run_target(workdir: Path, engage: str, target: Target, sizes: Sizes) -> list[IntakeRow]:
    with contextlib.ExitStack() as stack:
        relay = env.relay(stack, workdir, target.backend or env.EMBEDDED, engage)
        web, url = env.gunicorn(stack, relay, target.app, "web")
        port = int(url.rsplit(":", 1)[1])
        builder = load.Webhooks("127.0.0.1", port, env.SECRET)
        label = _backend_label(target)
        rows = []
        for connections in (CONNECTIONS, WIDE) if _wide(target, sizes) else (CONNECTIONS,):
            closed = functools.partial(_closed_loop, connections=connections)
            watched = _watched(closed, builder, sizes, web.pid)
            rows.append(IntakeRow(target.name, label, closed_mode(connections), *watched))
        if target.backend == env.PG_REDIS and target.app == env.REAL_APP:
            watched = _watched(_open_loop, builder, sizes, web.pid)
            rows.append(IntakeRow(target.name, label, _open_mode(), *watched))
        rss = tree_peak_rss(web.pid)
        for row in rows:
            row.web_rss_kib = rss
        return rows


def _wide(target: Target, sizes: Sizes) -> bool:
    """Also at WIDE connections? The ledger write only in the full run: the quick run keeps
    the two rows the plain-Celery target compares, and stays under 5 minutes."""
    return target.wide and (sizes.name == "full" or target.name != LEDGER_ONLY)


def _watched(
    measure: Callable[[load.Webhooks, Sizes, Callable[[], CpuSnapshot]], load.LoadResult],
    builder: load.Webhooks,
    sizes: Sizes,
    web_pid: int,
) -> tuple[load.LoadResult, float, dict[str, float]]:
    """The result, how much CPU other processes took meanwhile, and the CPU each part (web,
    PostgreSQL, Redis, load processes) spent per request while the load was sent."""
    result = measure(builder, sizes, lambda: CpuSnapshot.take(web_pid))
    assert result.watched is not None
    before, after = result.watched
    return result, after.others_since(before), after.per_request(before, result.sent)


def closed_mode(connections: int) -> str:
    return f"closed loop, {connections} connections"


def _open_mode() -> str:
    processes, threads = OPEN_THREADS
    return f"open loop {OPEN_LOOP_RATE:.0f}/s, {processes * threads} connections"


def _closed_loop(
    builder: load.Webhooks,
    sizes: Sizes,
    watch: Callable[[], CpuSnapshot],
    connections: int = CONNECTIONS,
) -> load.LoadResult:
    """CONNECTIONS load processes with one connection each; more connections are threads of
    those processes (16 processes would take more of the 2 cores than the load needs)."""
    count = CLOSED_CEILING * math.ceil(sizes.warmup + sizes.duration)
    threads = max(1, connections // CONNECTIONS)
    plan = load.Plan(sizes.warmup, sizes.duration, processes=CONNECTIONS, threads=threads)
    return load.run(builder, intake_bodies(count), plan, watch)


def _open_loop(
    builder: load.Webhooks, sizes: Sizes, watch: Callable[[], CpuSnapshot]
) -> load.LoadResult:
    count = math.ceil(OPEN_LOOP_RATE * (sizes.warmup + sizes.open_duration)) + 1
    processes, threads = OPEN_THREADS
    plan = load.Plan(sizes.warmup, sizes.open_duration, OPEN_LOOP_RATE, processes, threads)
    return load.run(builder, intake_bodies(count), plan, watch)


def _seed_contacts(engage: str) -> None:
    """The naive relay's writes should be single updates (100 ms), not update + create: create
    the intake's contacts first, with the latency briefly off."""
    faults = f"{engage}/_emulator/faults"
    requests.put(faults, json={"latency_ms": 0}, timeout=10).raise_for_status()
    with requests.Session() as http:
        http.auth = (env.ENGAGE_USER, env.ENGAGE_PASSWORD)
        for i in range(INTAKE_CONTACTS):
            body = {"emailAddress": email(i), "attributes": []}
            http.post(f"{engage}/api/rest/contact/create", json=body, timeout=10).raise_for_status()
    requests.put(faults, json={"latency_ms": NAIVE_LATENCY_MS}, timeout=10).raise_for_status()
