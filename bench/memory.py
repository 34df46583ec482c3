"""Worker memory at rest: the worker as the Procfile runs it, next to the same worker made to
import the web app as well (`celery worker --include service`). The second is what every
worker was before the shared core (issue 15): a worker imported `service.config`, which ran
`service/__init__.py` and so loaded Flask, every blueprint, apispec and all ten source kinds.
Both boot on the embedded defaults (the layout is the same on every backend) and idle through
a few sweeps; the figure is the peak RSS (VmHWM) of the main process and each pool process."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from bench import env
from bench.procs import tree_peak_rss

IDLE_SECONDS = 3.0
SHIPPED = "worker as shipped"
WITH_WEB = "worker that also imports the web app (before the shared core)"


@dataclass(frozen=True)
class WorkerMemory:
    label: str
    rss_kib: list[int]  # the main process first, then each pool process

    @property
    def total_kib(self) -> int:
        return sum(self.rss_kib)


def run(workdir: Path) -> list[WorkerMemory]:
    print("memory: a worker as shipped, and one that also imports the web app")
    return [
        _measure(workdir / "shipped", SHIPPED, ()),
        _measure(workdir / "with-web", WITH_WEB, ("--include", "service")),
    ]


def _measure(workdir: Path, label: str, extra: tuple[str, ...]) -> WorkerMemory:
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        engage = env.emulator(stack, workdir, "emulator")
        relay = env.relay(stack, workdir, env.EMBEDDED, engage, {"sweep_interval_seconds": 1})
        worker = env.celery(stack, relay, "worker", 2, extra)
        time.sleep(IDLE_SECONDS)
        return WorkerMemory(label, tree_peak_rss(worker.pid))


def reduction(rows: list[WorkerMemory]) -> float | None:
    """The shipped worker's total peak as a share of the worker that imports the web app."""
    found = {row.label: row.total_kib for row in rows}
    if not found.get(WITH_WEB) or SHIPPED not in found:
        return None
    return found[SHIPPED] / found[WITH_WEB]
