"""`GET /metrics`: every process's counters merged, plus gauges read from the ledger.

The ledger gauges (pending decisions and the age of the oldest, open dead letters, paused
destinations) are computed by `LedgerCollector` at scrape time, in the web process: they are
facts of the ledger, the same whichever process is asked, so they are not per-process gauges.
The endpoint needs `Authorization: Bearer <[metrics] token>`; without a token it is off (403).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from relay.ledger import chain_store
from relay.ledger import pauses as destinations
from relay.ledger.models import ChainVerification, DeadLetter, Outbox, utcnow
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from service.admin.bearer import BearerGate
from service.runtime import Runtime

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = get_logger(__name__)
bp = Blueprint("metrics", __name__)
GATE = BearerGate(
    realm="consent-relay-metrics",
    disabled_slug="metrics-disabled",
    disabled_title="Metrics are disabled",
    disabled_detail=(
        "No metrics token is configured; set [metrics] token in the config to enable it."
    ),
    unauthorized_detail="Send Authorization: Bearer <token>, with the configured [metrics] token.",
)
P = metrics.PREFIX


@dataclass
class LedgerSnapshot:
    """Per destination: pending decisions, the oldest one's receipt, open dead letters."""

    pending: dict[str, int] = field(default_factory=dict)
    oldest: dict[str, dt.datetime] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    verification: ChainVerification | None = None  # the last `ledger verify`

    def names(self, configured: Iterable[str]) -> list[str]:
        return sorted({*configured, *self.pending, *self.dead_letters, *self.paused})


def read_snapshot(session: Session) -> LedgerSnapshot:
    snapshot = LedgerSnapshot()
    pending = session.execute(
        select(Outbox.destination, func.count(), func.min(Outbox.created_at))
        .where(Outbox.status == "pending")
        .group_by(Outbox.destination)
    )
    for name, count, oldest in pending:
        snapshot.pending[name] = int(count)
        if oldest is not None:
            snapshot.oldest[name] = oldest
    dead = session.execute(
        select(DeadLetter.destination, func.count())
        .where(DeadLetter.status == "open")
        .group_by(DeadLetter.destination)
    )
    snapshot.dead_letters = {name: int(count) for name, count in dead}
    snapshot.paused = destinations.paused_names(session)
    snapshot.verification = chain_store.last_verification(session)
    if snapshot.verification is not None:
        session.expunge(snapshot.verification)  # read after the caller's rollback
    return snapshot


class LedgerCollector:
    """A prometheus_client collector: reads the ledger at each scrape."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        configured: Iterable[str],
        clock: Callable[[], dt.datetime] = utcnow,
    ):
        self._sessions = sessions
        self._configured = tuple(configured)
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # never read the ledger when registered

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(P + "ledger_up", "1 when the ledger could be read at this scrape")
        try:
            with self._sessions() as session:
                snapshot = read_snapshot(session)
                session.rollback()
        except SQLAlchemyError:
            log.warning("metrics: the ledger cannot be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._gauges(snapshot)

    def _gauges(self, snapshot: LedgerSnapshot) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        families = {
            key: GaugeMetricFamily(P + name, doc, labels=["destination"])
            for key, (name, doc) in _GAUGES.items()
        }
        now = self._clock()
        for name in snapshot.names(self._configured):
            oldest = snapshot.oldest.get(name)
            age = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
            families["pending"].add_metric([name], snapshot.pending.get(name, 0))
            families["age"].add_metric([name], age)
            families["dead"].add_metric([name], snapshot.dead_letters.get(name, 0))
            families["paused"].add_metric([name], 1 if name in snapshot.paused else 0)
        yield from families.values()
        yield from _verification_gauges(snapshot.verification)


def _verification_gauges(last: ChainVerification | None) -> Iterator[Metric]:
    """The last `ledger verify` (CLI or admin API): when it finished and what it found; no
    series before the first one."""
    from prometheus_client.core import GaugeMetricFamily

    if last is None:
        return
    values = {
        "ledger_verify_last_timestamp_seconds": (
            "When the last chain verification finished (Unix time)",
            last.finished_at.timestamp(),
        ),
        "ledger_verify_last_broken_contacts": (
            "Contacts whose chain the last verification found broken",
            last.broken,
        ),
        "ledger_verify_last_links": ("Links the last verification checked", last.links),
    }
    for name, (doc, value) in values.items():
        family = GaugeMetricFamily(P + name, doc)
        family.add_metric([], float(value))
        yield family


_GAUGES = {
    "pending": ("pending_decisions", "Outbox rows not delivered yet"),
    "age": ("oldest_pending_age_seconds", "Age of the oldest undelivered decision (0: none)"),
    "dead": ("dead_letters_open", "Dead letters waiting for an operator"),
    "paused": ("destination_paused", "1 while the destination is paused"),
}


class _Local:
    """This process's own samples, when not in multiprocess mode (tests, one process)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return metrics.metrics().registry.collect()


def scrape_registry(runtime: Runtime, *, with_ledger: bool = True) -> CollectorRegistry:
    """Every process's counters (merged from PROMETHEUS_MULTIPROC_DIR) plus the ledger."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if metrics.is_multiprocess():
        MultiProcessCollector(registry)
    else:
        registry.register(_Local())
    if with_ledger:
        registry.register(LedgerCollector(runtime.sessions, runtime.settings.destinations))
    return registry


def intake_rejects(runtime: Runtime) -> dict[tuple[str, str], int]:
    """Webhooks refused at intake since the processes started, by (source, reason), summed
    over every web process: the operator page's "recent rejects" (the ledger keeps none)."""
    totals: dict[tuple[str, str], int] = {}
    for family in scrape_registry(runtime, with_ledger=False).collect():
        if family.name != P + "intake":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("outcome") == "rejected":
                key = (labels.get("source", ""), labels.get("reason", ""))
                totals[key] = totals.get(key, 0) + int(sample.value)
    return {key: n for key, n in sorted(totals.items()) if n}


@bp.get("/metrics")
def scrape() -> Response:
    from prometheus_client.exposition import choose_encoder

    runtime: Runtime = current_app.extensions["consent_relay"]
    refused = _refuse(runtime.settings.ops.metrics_token)
    if refused is not None:
        return refused
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(scrape_registry(runtime)), headers={"Content-Type": content_type})


def _refuse(token: str | None) -> Response | None:
    refused = GATE.refuse([token] if token else [])
    if refused is None:
        return None
    answer, why = refused
    if why != "disabled":
        log.warning("metrics scrape refused", reason=why)
    return answer


def init_app(app: Flask) -> None:
    """Register /metrics; outside tests, also make sure multiprocess mode is set up (gunicorn's
    config normally did it already, before the workers were forked)."""
    runtime: Runtime = app.extensions["consent_relay"]
    if not app.testing:
        path = metrics.prepare_multiprocess_dir(runtime.settings.data_dir)
        if path is not None:
            metrics.clean_stale_files(path)
    app.register_blueprint(bp)
