"""The run's Markdown report: machine, commit and date, then one table per measurement and the
targets, written to bench/results/latest.md and a timestamped copy."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.delivery import ENGAGE_LIMIT, Capacity, Delivered
from bench.env import REPO, web_concurrency
from bench.intake import LEDGER_ONLY, PLAIN_CELERY, IntakeRow
from bench.lanes import Isolation, Withdrawals
from bench.memory import WorkerMemory
from bench.recovery import Recovery
from bench.sizes import CONNECTIONS, WIDE
from bench.targets import find, ms, targets


@dataclass(frozen=True)
class Meta:
    mode: str
    started: dt.datetime
    commit: str
    machine: str
    load_average: tuple[float, float, float]

    @classmethod
    def collect(cls, mode: str) -> Meta:
        return cls(mode, dt.datetime.now(dt.UTC), _commit(), _machine(), os.getloadavg())

    @property
    def stamp(self) -> str:
        return self.started.strftime("%Y%m%d-%H%M%S")


@dataclass
class Results:
    meta: Meta
    intake: list[IntakeRow]
    delivered: list[Delivered]
    capacity: list[Capacity]
    recovery: list[Recovery] = field(default_factory=list)
    isolation: Isolation | None = None
    withdrawals: Withdrawals | None = None
    worker_memory: list[WorkerMemory] = field(default_factory=list)
    minutes: float = 0.0
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _commit() -> str:
    dirty = " (dirty: uncommitted changes)" if _git("status", "--porcelain") else ""
    return (_git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = next((line.split()[1] for line in meminfo if line.startswith("MemTotal:")), "0")
    return (
        f"{cpu}, {os.cpu_count()} cores, {int(memory) / 2**20:.0f} GiB; "
        f"Python {platform.python_version()}; {platform.system()} {platform.release()}"
    )


def bare_rate(results: Results) -> float:
    return next((row.result.rate for row in results.intake if "baseline 1" in row.name), 0.0)


def _ratio(rate: float, other: IntakeRow | None) -> str:
    if other is None or not other.result.rate:
        return "-"
    share = rate / other.result.rate
    return f"{share:.1%}" if share < 0.1 else f"{share:.0%}"


def _intake_table(results: Results) -> list[str]:
    """Each row against the baselines at the same load (the bare Flask at 4 connections)."""
    bare = find(results, "bare Flask (baseline 1)", f"closed loop, {CONNECTIONS} connections")
    lines = [
        "| target | ledger + broker | load | requests/s | p50 ms | p99 ms | errors "
        "| vs bare Flask | vs ledger write | vs plain Celery | others' CPU |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in results.intake:
        r = row.result
        rate = f"{r.rate:.0f}" + (" (ran out of requests)" if r.exhausted else "")
        ratios = ["(offered rate)"] * 3
        if row.mode.startswith("closed"):
            ledger, plain = (
                find(results, LEDGER_ONLY, row.mode),
                find(results, PLAIN_CELERY, row.mode),
            )
            ratios = [_ratio(r.rate, other) for other in (bare, ledger, plain)]
        lines.append(
            f"| {row.name} | {row.backend} | {row.mode} | {rate} | {ms(r.percentile_ms(50))} "
            f"| {ms(r.percentile_ms(99))} | {r.errors} | {' | '.join(ratios)} "
            f"| {row.others_cpu:.0%} |"
        )
    return lines


def _delivery_table(results: Results) -> list[str]:
    lines = [
        "| run | decisions | contacts | worker processes | drain s | Engage calls (creates) "
        "| calls per decision | calls/s | share of the 10/s limit | violations | wrong contacts "
        "| others' CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for d in results.delivered:
        s = d.spec
        share = f"{d.call_rate / ENGAGE_LIMIT:.0%}" if "rate limited" in s.name else "-"
        lines.append(
            f"| {s.name} | {s.decisions} | {s.contacts} | {s.concurrency} | {d.drain_seconds:.1f} "
            f"| {d.api_requests} ({d.calls.get('create', 0)}) | {d.api_requests / s.decisions:.2f} "
            f"| {d.call_rate:.1f} | {share} | {d.violations} | {d.wrong_contacts} "
            f"| {d.others_cpu:.0%} |"
        )
    return lines


def _pace_table(results: Results) -> list[str]:
    """Where a rate-limited run's time goes: waiting for the first call, the calls at the
    relay's pace, the tail (the last contacts, each an update then a create), and the time
    from the last call to the ledger showing it."""
    lines = [
        "| run | pace calls/s | first call after ready s | first to last call: share of pace "
        "| middle 90% of calls: share of pace | last 5% of calls: share of pace "
        "| last call to drained s |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for d in results.delivered:
        if "rate limited" not in d.spec.name:
            continue
        middle, last = d.rate_between(0.05, 0.95), d.rate_between(0.95, 1.0)
        lines.append(
            f"| {d.spec.name} | {d.pace:.2f} | {d.first_call_after:.2f} "
            f"| {d.call_rate / d.pace:.1%} | {middle / d.pace:.1%} | {last / d.pace:.1%} "
            f"| {d.tail_seconds:.2f} |"
        )
    return lines


def _delivery_notes(results: Results) -> list[str]:
    limited = [d for d in results.delivered if "rate limited" in d.spec.name]
    paces = [
        f"{ENGAGE_LIMIT} x (1 - {d.spec.headroom}) = {ENGAGE_LIMIT * (1 - d.spec.headroom):.1f} "
        f"calls/s ({d.spec.name}: {d.api_requests} calls in "
        f"{d.api_requests / (ENGAGE_LIMIT * (1 - d.spec.headroom)):.1f} s at the least)"
        for d in limited
    ]
    return [
        "Every contact is new to Engage: 2 calls (update answers NO_SUCH_OBJECT, then create). "
        "One write per contact however many decisions it has (coalescing). The drain is timed "
        "from the worker's `ready.` to no pending outbox row. The relay paces at "
        + "; ".join(paces)
        + ".",
    ]


def _capacity_table(results: Results) -> list[str]:
    lines = [
        "| worker processes | deliveries/s | deliveries/s per process | Engage calls/s "
        "| calls/s per process | emulator alone, as many clients: calls/s | relay vs alone |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    alone = {c.clients: c.result.rate for c in results.capacity}
    for d in results.delivered:
        n = d.spec.concurrency
        if "no rate limit" not in d.spec.name:
            continue
        deliveries = d.spec.contacts / d.drain_seconds
        ratio = f"{d.call_rate / alone[n]:.0%}" if alone.get(n) else "-"
        lines.append(
            f"| {n} | {deliveries:.1f} | {deliveries / n:.1f} | {d.call_rate:.1f} "
            f"| {d.call_rate / n:.1f} | {alone.get(n, 0):.1f} | {ratio} |"
        )
    return lines


def _rss_row(name: str, kib: list[int]) -> str:
    if not kib:
        return f"| {name} | 0 | - | - |"
    return f"| {name} | {len(kib)} | {max(kib) / 1024:.0f} | {sum(kib) / 1024:.0f} |"


def _memory_table(results: Results) -> list[str]:
    lines = ["| processes | count | largest MiB | total MiB |", "|---|--:|--:|--:|"]
    for row in results.intake:
        if row.mode == f"closed loop, {CONNECTIONS} connections":
            where = "" if row.backend == "-" else f", {row.backend}"
            label = f"web (gunicorn master + workers): {row.name.split(' (')[0]}{where}"
            lines.append(_rss_row(label, row.web_rss_kib))
    for d in results.delivered:
        label = f"worker (celery main + {d.spec.concurrency} pool): {d.spec.name}"
        lines.append(_rss_row(label, d.worker_rss_kib))
    if results.delivered:
        lines.append(_rss_row("beat (celery beat)", results.delivered[0].beat_rss_kib))
    for worker in results.worker_memory:  # bench/memory.py: idle, embedded defaults
        lines.append(_rss_row(f"{worker.label}, idle (celery main + 2 pool)", worker.rss_kib))
    return lines


def _recovery_table(results: Results) -> list[str]:
    """bench/recovery.py: SIGKILL of one pool process mid-write (Engage at 400 ms a call),
    to the delivery of every contact whose lease was held then. The lease is 180 s."""
    lines = ["| ledger + broker | kills | seconds, each | worst |", "|---|--:|---|--:|"]
    for r in results.recovery:
        each = ", ".join(f"{s:.1f}" for s in r.seconds)
        lines.append(f"| {r.backend} | {len(r.seconds)} | {each} | {r.worst:.1f} |")
    return lines


def _lanes_table(results: Results) -> list[str]:
    """bench/lanes.py: Engage beside a slow destination, and withdrawals behind a backlog."""
    lines = []
    iso, wd = results.isolation, results.withdrawals
    if iso is not None:
        lines += [
            "| Engage's contacts | drain alone (s) | beside a slow Dotdigital (s) | ratio |",
            "|--:|--:|--:|--:|",
            f"| {iso.contacts} | {iso.alone_seconds:.1f} | {iso.with_slow_seconds:.1f} "
            f"| {iso.ratio:.2f} |",
            "",
        ]
    if wd is not None:
        lines += [
            "| grants waiting | withdrawals | p50 (s) | p99 (s) | max (s) |",
            "|--:|--:|--:|--:|--:|",
            f"| {wd.backlog} | {len(wd.seconds)} | {wd.percentile(50):.2f} "
            f"| {wd.percentile(99):.2f} | {max(wd.seconds, default=0.0):.2f} |",
        ]
    return lines


CPU_PARTS = ("web", "PostgreSQL", "Redis", "load")


def _cpu_table(results: Results) -> list[str]:
    """Each part's CPU per request while the load ran: what the relay costs beyond the bare
    endpoint, and where (the machine's cores are shared by all of them)."""
    lines = [
        "| target | ledger + broker | web (gunicorn) | PostgreSQL | Redis | load processes "
        "| total | vs bare Flask's total |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    closed = [row for row in results.intake if row.mode.startswith("closed") and row.cpu_us]
    bare = next((sum(r.cpu_us.values()) for r in closed if "baseline 1" in r.name), 0.0)
    for row in closed:
        parts = [row.cpu_us.get(part, 0.0) for part in CPU_PARTS]
        total = sum(parts)
        ratio = f"{total / bare:.1f}x" if bare else "-"
        cells = " | ".join(f"{value:.0f}" for value in (*parts, total))
        lines.append(f"| {row.name} | {row.backend} | {cells} | {ratio} |")
    return lines


def markdown(results: Results, chart: str) -> str:
    m = results.meta
    return "\n".join(
        [
            f"# Consent Relay benchmark ({m.mode})",
            "",
            f"- date: {m.started:%Y-%m-%d %H:%M} UTC, {results.minutes:.1f} min",
            f"- commit: {m.commit}",
            f"- machine: {m.machine}",
            f"- load average (1 min) at start {m.load_average[0]:.2f}, at the end "
            f"{results.load_end[0]:.2f}: anything else running on the machine skews the numbers",
            f"- gunicorn: service/http/gunicorn_conf.py, {web_concurrency()} "
            "service.http.web.RelayWorker workers; closed loop: "
            f"{CONNECTIONS} load processes, one connection each (at {WIDE} connections: "
            f"{WIDE // CONNECTIONS} threads each)",
            '- one run on one machine: read the ratios, not the absolute numbers. "others\' CPU": '
            "share of all cores used meanwhile by processes the bench did not start (PostgreSQL "
            "and Redis left out); more than a few % means the row was measured on a busy machine",
            "",
            "## Intake",
            "",
            *_intake_table(results),
            "",
            "### Where the CPU goes (microseconds of CPU per request, closed loop)",
            "",
            *_cpu_table(results),
            "",
            "## Delivery (PostgreSQL + Redis, Engage emulator 50 ms a call)",
            "",
            *_delivery_table(results),
            "",
            *_delivery_notes(results),
            "",
            "### Where a rate-limited run's time goes",
            "",
            *_pace_table(results),
            "",
            "### Without a rate limit: per worker process vs the emulator alone",
            "",
            *_capacity_table(results),
            "",
            "## Delivery lanes (PostgreSQL + Redis, 2 worker processes)",
            "",
            *_lanes_table(results),
            "",
            "## Recovery after a pool process is killed",
            "",
            *_recovery_table(results),
            "",
            "## Peak memory (VmHWM of each process)",
            "",
            *_memory_table(results),
            "",
            "## Targets",
            "",
            "| target | measured | met |",
            "|---|--:|---|",
            *(f"| {t} | {v} | {'yes' if ok else 'NO'} |" for t, v, ok in targets(results)),
            "",
            f"![intake and delivery]({chart})",
            "",
            "Intake profile: `intake-profile.txt`.",
            "",
        ]
    )
