"""Prometheus metrics, correct across gunicorn workers and Celery prefork children.

prometheus_client chooses its storage when it is first imported: with `PROMETHEUS_MULTIPROC_DIR`
set, every process writes its samples to its own files in that directory and the web process
merges them at scrape time. So nothing here imports prometheus_client at module level: the
entry points (`service.http.gunicorn_conf`, `create_app`, the Celery `worker_init` signal) call
`prepare_multiprocess_dir` first, and the metrics are built on first use (if something else
loaded prometheus_client before, its value class is switched to the multiprocess one).

The counters are recorded where things happen (intake, delivery); the gauges that describe the
ledger (pending work, dead letters, pauses) are computed at scrape time, in
`service.health.metrics_http`, from the ledger itself.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relay.telemetry.logs import get_logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

log = get_logger(__name__)
ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "consent_relay_"
# From "written at once" to "a day of retries": the decision's receipt to Engage's 2xx.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600)
_FILE_PID = re.compile(r"_(\d+)\.db$")


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry  # this process's own samples (single-process mode)
    intake: Counter
    deliveries: Counter
    retries: Counter
    superseded: Counter
    coalesced: Counter
    throttled: Counter
    dead_lettered: Counter
    lost_runs: Counter
    ops_sign_ins: Counter
    verifications: Counter
    drift: Counter
    pruned: Counter
    notifications: Counter
    destination_erasures: Counter
    latency: Histogram


_metrics: _Metrics | None = None
_lock = threading.Lock()


_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "intake": ("Webhooks answered, by outcome", ("source", "outcome", "reason")),
    "deliveries": ("Writes to a destination, by outcome", ("destination", "outcome", "status")),
    "retries": ("Failed writes scheduled again", ("destination", "outcome")),
    "superseded": ("Decisions settled without a write of their own", ("destination",)),
    "coalesced": ("Decisions folded into the write of a newer one", ("destination",)),
    "throttled": ("Writes deferred: no rate-limit slot in time", ("destination",)),
    "dead_lettered": ("Decisions dead-lettered", ("destination", "reason")),
    "lost_runs": ("Delivery runs whose pool process died; leases freed, work re-sent", ("task",)),
    "ops_sign_ins": ("Operator page sign-in attempts, by outcome", ("outcome",)),
    "verifications": (
        "Read-backs of a delivered decision, by outcome (verified, drift, error, unverifiable)",
        ("destination", "outcome"),
    ),
    "drift": (
        "Read-backs that differed from the latest decision, by action (repaired, reported)",
        ("destination", "action"),
    ),
    "pruned": (
        "Rows removed by retention, by table (docs: Data protection, retention)",
        ("table",),
    ),
    "notifications": (
        "Operational notification sends, by outcome (sent, retry, failed)",
        ("target", "type", "outcome"),
    ),
    "destination_erasures": (
        "Erasures passed on to a destination's delete call, by outcome (done, retry, failed)",
        ("destination", "outcome"),
    ),
}


def _build() -> _Metrics:
    from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

    disable_created_metrics()  # `_created` series: noise here, and absent in multiprocess mode
    registry = CollectorRegistry(auto_describe=True)
    counters = {
        name: Counter(PREFIX + name, doc, labels, registry=registry)
        for name, (doc, labels) in _COUNTERS.items()
    }
    latency = Histogram(
        PREFIX + "delivery_latency_seconds",
        "From receipt of a decision to its delivery, by the decision delivered",
        ("destination", "state"),
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return _Metrics(registry=registry, latency=latency, **counters)


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _build()
    return _metrics


def _safely(action: str, record: Callable[[], None]) -> None:
    """Metrics never break a request or a delivery (a deleted metrics dir, say)."""
    try:
        record()
    except Exception:  # noqa: BLE001 - logged, never raised
        log.warning("metric not recorded", metric=action, exc_info=True)


# --- recording --------------------------------------------------------------------------------


def count_intake(source: str, outcome: str, reason: str = "") -> None:
    _safely("intake", lambda: metrics().intake.labels(source, outcome, reason).inc())


def count_delivery(destination: str, outcome: str, status: int | None) -> None:
    code = "none" if status is None else str(status)
    _safely("deliveries", lambda: metrics().deliveries.labels(destination, outcome, code).inc())


def count_retry(destination: str, outcome: str) -> None:
    _safely("retries", lambda: metrics().retries.labels(destination, outcome).inc())


def count_superseded(destination: str, count: int) -> None:
    if count > 0:
        _safely("superseded", lambda: metrics().superseded.labels(destination).inc(count))


def count_coalesced(destination: str, count: int) -> None:
    if count > 0:
        _safely("coalesced", lambda: metrics().coalesced.labels(destination).inc(count))


def count_throttled(destination: str) -> None:
    _safely("throttled", lambda: metrics().throttled.labels(destination).inc())


def count_dead_lettered(destination: str, reason: str) -> None:
    _safely("dead_lettered", lambda: metrics().dead_lettered.labels(destination, reason).inc())


def count_lost_run(task: str) -> None:
    _safely("lost_runs", lambda: metrics().lost_runs.labels(task).inc())


def count_ops_sign_in(outcome: str) -> None:
    """signed_in, refused, throttled_client or throttled_account."""
    _safely("ops_sign_ins", lambda: metrics().ops_sign_ins.labels(outcome).inc())


def count_verification(destination: str, outcome: str) -> None:
    _safely("verifications", lambda: metrics().verifications.labels(destination, outcome).inc())


def count_drift(destination: str, action: str) -> None:
    _safely("drift", lambda: metrics().drift.labels(destination, action).inc())


def count_pruned(table: str, count: int) -> None:
    if count:
        _safely("pruned", lambda: metrics().pruned.labels(table).inc(count))


def count_notification(target: str, type_: str, outcome: str) -> None:
    _safely("notifications", lambda: metrics().notifications.labels(target, type_, outcome).inc())


def count_destination_erasure(destination: str, outcome: str) -> None:
    _safely(
        "destination_erasures",
        lambda: metrics().destination_erasures.labels(destination, outcome).inc(),
    )


def observe_latency(destination: str, seconds: float, state: str) -> None:
    """Accepted-to-delivered, by decision state: withdrawals are meant to overtake grants."""
    value = max(seconds, 0.0)
    _safely("latency", lambda: metrics().latency.labels(destination, state).observe(value))


# --- multiprocess mode ------------------------------------------------------------------------


def is_multiprocess() -> bool:
    """Whether this process writes its samples to PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False)) and bool(os.environ.get(ENV))


def prepare_multiprocess_dir(data_dir: Path) -> Path | None:
    """Use $PROMETHEUS_MULTIPROC_DIR, else `<data_dir>/metrics`; create it. Must run before
    this process records a metric: afterwards it is too late, and this says so (None).

    prometheus_client may have been imported already (the `celery` command loads its plugins,
    Flower's among them, which import it): it then chose in-memory values, and is switched to
    per-process files as its documentation allows (`values.ValueClass`)."""
    if _metrics is not None and not is_multiprocess():
        log.warning("metrics already recorded in memory: this process's stay local")
        return None
    path = Path(os.environ.get(ENV) or Path(data_dir, "metrics")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _owners(path: Path) -> dict[str, int]:
    owners = {}
    for name in glob.glob(str(path / "*.db")):
        match = _FILE_PID.search(name)
        if match:
            owners[name] = int(match.group(1))
    return owners


def clean_stale_files(path: Path) -> int:
    """Remove the files of an earlier run, when that is safe: only once no live process owns
    a file. Web and worker share the directory, so a web restart must not reset the worker's
    counters (nor its dead children's) while the worker runs; those files stay until every
    process that wrote them is gone. Returns how many files were removed."""
    owners = _owners(path)
    if any(_alive(pid) for pid in owners.values()):
        return 0
    removed = 0
    for name, pid in owners.items():
        if not _alive(pid):  # checked again: a process may have started meanwhile
            try:
                os.remove(name)
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        log.info("removed stale metrics files", count=removed, path=str(path))
    return removed


def mark_process_dead(pid: int) -> None:
    """Bookkeeping for a process that ended (gunicorn `child_exit`, Celery children)."""
    path = os.environ.get(ENV)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)
