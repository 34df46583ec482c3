"""The targets of `make bench`, each as (target, measured, met), in the order of the
performance brief (docs/benchmark.md#targets): intake against the plain Celery relay, latency,
delivery at the relay's own pace, recovery, memory; then the lanes and correctness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.intake import PLAIN_CELERY, IntakeRow, closed_mode
from bench.lanes import ISOLATION_TARGET, WITHDRAWAL_TARGET_SECONDS
from bench.memory import reduction
from bench.recovery import RECOVERY_TARGET_SECONDS
from bench.sizes import OPEN_LOOP_RATE, WIDE

if TYPE_CHECKING:
    from bench.report import Results

P99_TARGET_MS = 50.0
PLAIN_CELERY_TARGET = 1.0  # the relay's requests/s over the plain Celery relay's
PACE_TARGET = 0.99  # Engage calls/s over the relay's pace (limit x (1 - headroom))
DEFAULT_PACE_RUN = "rate limited 10/s"  # the run at the default headroom
Target = tuple[str, str, bool]


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def find(results: Results, name: str, mode: str, backend: str | None = None) -> IntakeRow | None:
    return next(
        (
            row
            for row in results.intake
            if row.name == name and row.mode == mode and backend in (None, row.backend)
        ),
        None,
    )


def targets(results: Results) -> list[Target]:
    found = _intake(results)
    found += _delivery(results)
    for r in results.recovery:
        label = f"SIGKILL of a pool process to its contacts' delivery ({r.backend})"
        target = f"{label}, at most {RECOVERY_TARGET_SECONDS:.0f} s"
        found.append((target, f"{r.worst:.1f} s", r.worst <= RECOVERY_TARGET_SECONDS))
    share = reduction(results.worker_memory)
    if share is not None:
        label = "worker's peak memory below a worker that imports the web app (idle, total)"
        found.append((label, f"{share:.0%} of it", share < 1.0))
    found += _lanes(results)
    wrong = sum(d.wrong_contacts for d in results.delivered)
    found.append(("every contact at its latest decision", f"{wrong} wrong", wrong == 0))
    return found


def _intake(results: Results) -> list[Target]:
    found: list[Target] = []
    wide, pg = closed_mode(WIDE), "PostgreSQL + Redis"
    relay, plain = find(results, "consent relay", wide, pg), find(results, PLAIN_CELERY, wide)
    if relay and plain and plain.result.rate:
        share = relay.result.rate / plain.result.rate
        label = f"requests/s at least {PLAIN_CELERY_TARGET:.1f}x the plain Celery relay's"
        found.append((f"{label} ({pg}, {wide})", f"{share:.2f}x", share >= PLAIN_CELERY_TARGET))
        mine, theirs = relay.result.percentile_ms(99), plain.result.percentile_ms(99)
        label = f"p99 at {WIDE} connections no higher than the plain Celery relay's"
        found.append((label, f"{ms(mine)} ms vs {ms(theirs)} ms", mine <= theirs))
    for row in results.intake:
        if row.name == "consent relay" and row.mode.startswith("open"):
            p99 = row.result.percentile_ms(99)
            label = f"p99 under {P99_TARGET_MS:.0f} ms at {OPEN_LOOP_RATE:.0f}/s ({row.backend})"
            found.append((label, f"{ms(p99)} ms", p99 < P99_TARGET_MS))
    return found


def _delivery(results: Results) -> list[Target]:
    found: list[Target] = []
    for d in results.delivered:
        if d.spec.name == DEFAULT_PACE_RUN:
            share = d.call_rate / d.pace
            label = f"at least {PACE_TARGET:.0%} of the relay's pace ({d.pace:.1f} calls/s)"
            found.append((f"{label}, {d.spec.name}", f"{share:.1%}", share >= PACE_TARGET))
        if "rate limited" in d.spec.name:
            label = f"no rate-limit violation ({d.spec.name}, Engage emulator's count)"
            found.append((label, str(d.violations), d.violations == 0))
    return found


def _lanes(results: Results) -> list[Target]:
    found: list[Target] = []
    iso, wd = results.isolation, results.withdrawals
    if iso is not None:
        label = f"Engage's drain alone / beside a slow Dotdigital at least {ISOLATION_TARGET}"
        found.append((label, f"{iso.ratio:.2f}", iso.ratio >= ISOLATION_TARGET))
        bad = sum(iso.violations.values())
        label = "no rate-limit violation at Engage or Dotdigital (isolation run)"
        found.append((label, str(bad), bad == 0))
    if wd is not None:
        p99 = wd.percentile(99)
        label = f"withdrawal accepted-to-delivered p99 at most {WITHDRAWAL_TARGET_SECONDS:.0f} s"
        met = p99 <= WITHDRAWAL_TARGET_SECONDS
        found.append((f"{label} behind {wd.backlog} grants", f"{p99:.2f} s", met))
        found.append(
            ("no rate-limit violation (withdrawal run)", str(wd.violations), not wd.violations)
        )
    return found
