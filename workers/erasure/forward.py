"""Pass one erasure on to one destination through its vendor's delete call, and record the
outcome (docs/data-protection.md#at-destinations).

The row holds the identifier sealed (relay/ledger/destination_erasures.py); it is opened here
for the call only. The client classifies the answer in its one classification place
(`classify` of workers/destinations/engage.py and moengage.py): success, "accepted" or "no such
contact" is `done` (the person is not there either way); a transient failure (5xx, timeout,
rate limit) or an auth failure (credentials an operator can fix) waits in the ledger and is
tried again on the delivery retry schedule until `max_retry_age_seconds`; anything else is
`failed` for good.
A done row loses its sealed identifier; a failed one keeps it until an operator retries or
acknowledges it (relay/ledger/erasure_failures.py). Logs, metrics and the recorded detail never
hold the identifier (the vendor's error body can echo it: it is redacted). The decisions
(`answered`, `after_error`, `retry_delay`) are pure functions, tested without a database.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from relay.config.settings import DeliverySettings
from relay.ledger import destination_erasures as rows
from relay.ledger.kept_bodies import KeptBodyUnreadableError
from relay.ledger.models import DestinationErasure, utcnow
from relay.ledger.redaction import redactor
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from workers.delivery.context import delivery_context
from workers.destinations.errors import AuthError, DeliveryError, TransientError

log = get_logger(__name__)
JITTER = 0.2
PublishErasure = Callable[[int], None]  # a destination erasure's row id


@runtime_checkable
class Eraser(Protocol):
    def delete(self, identifier: str) -> str:
        """`deleted`, `accepted` (deleted later by the vendor) or `absent`; raises a
        DeliveryError otherwise."""
        ...


@dataclass
class ErasureContext:
    sessions: sessionmaker[Session]
    key: str | None
    erasers: Mapping[str, Eraser]
    settings: DeliverySettings
    clock: Callable[[], dt.datetime] = utcnow


_contexts: dict[tuple[int, int], ErasureContext] = {}


def erasure_context(app: Celery) -> ErasureContext:
    """One per process (keyed by pid), on the delivery context's sessions and paced clients."""
    key = (os.getpid(), id(app))
    if key not in _contexts:
        settings = app.conf.consent_relay_settings
        delivery = delivery_context(app)
        erasers = {
            name: writer
            for name, writer in delivery.writers.items()
            if isinstance(writer, Eraser) and settings.destinations[name].erase_at_destination
        }
        _contexts[key] = ErasureContext(
            delivery.sessions,
            settings.privacy.destination_erasure_key,
            erasers,
            settings.delivery,
        )
    return _contexts[key]


def schedule_destination_erasures(ctx: ErasureContext, publish: PublishErasure) -> int:
    """Publish every pending row that is due (the backstop of the enqueue after commit)."""
    redispatch = dt.timedelta(seconds=ctx.settings.redispatch_after_seconds)
    with ctx.sessions() as session:
        due = rows.due(session, ctx.clock(), redispatch)
        session.commit()
    for row_id in due:
        publish(row_id)
    return len(due)


def erase_at_destination(ctx: ErasureContext, row_id: int) -> str:
    """One try: done, retry, failed, or settled (nothing left to do)."""
    with ctx.sessions() as session:
        try:
            item = rows.outgoing(session, row_id, ctx.key or "")
        except (KeptBodyUnreadableError, ValueError):  # key changed, or none configured now
            session.rollback()
            return _fail_unreadable(ctx, row_id)
        session.rollback()  # never hold a transaction across an HTTP call
    if item is None:
        return "settled"
    eraser = ctx.erasers.get(item.destination)
    if eraser is None:  # removed from the config, or the option turned off since
        return _record(ctx, item, rows.FAILED, None, "erase_at_destination is off for it now")
    try:
        found = eraser.delete(item.identifier)
    except DeliveryError as exc:
        return _after_error(ctx, item, exc)
    return _record(ctx, item, *answered(found))


@dataclass(frozen=True)
class Decision:
    """What one failed try leads to: the row's next status, and when a retry is due."""

    status: str
    detail: str
    retry_in_seconds: float | None = None


def answered(found: str) -> tuple[str, int | None, str]:
    """A delete call that did not raise: (status, HTTP status, detail). Absent counts as done:
    the person is not there either way."""
    if found == "absent":
        return rows.DONE, None, "no such contact at the destination"
    if found == "accepted":  # MoEngage: deleted after its 24-hour buffer
        return rows.DONE, 200, "accepted: the vendor deletes it later"
    return rows.DONE, 200, "deleted"


def after_error(
    exc: DeliveryError,
    attempts: int,
    age_seconds: float,
    settings: DeliverySettings,
    draw: float = 1.0,
) -> Decision:
    """A failed try (`attempts` before it): transient and auth failures wait and are tried
    again on the delivery schedule, jittered by `draw` (a factor near 1), until
    max_retry_age_seconds; anything else fails for good. `detail` is not yet redacted."""
    detail = f"{exc.outcome}: {exc}"
    retryable = isinstance(exc, TransientError | AuthError)
    if not retryable:
        return Decision(rows.FAILED, detail)
    if age_seconds >= settings.max_retry_age_seconds:
        return Decision(rows.FAILED, f"gave up after {attempts + 1} tries; {detail}")
    return Decision(rows.PENDING, detail, retry_delay(attempts, settings, draw))


def retry_delay(attempts: int, settings: DeliverySettings, draw: float = 1.0) -> float:
    """The wait before the next try: the delivery schedule's step for this many tries (its
    last step once past the end), times the jitter draw."""
    schedule = settings.retry_schedule_seconds
    return schedule[min(attempts, len(schedule) - 1)] * draw


def _after_error(ctx: ErasureContext, item: rows.Outgoing, exc: DeliveryError) -> str:
    now = ctx.clock()
    age = (now - item.created_at).total_seconds()
    draw = random.uniform(1 - JITTER, 1 + JITTER)
    decision = after_error(exc, item.attempts, age, ctx.settings, draw)
    detail = str(redactor([item.identifier])(decision.detail))  # a vendor body can echo it
    retry_at = None
    if decision.retry_in_seconds is not None:
        retry_at = now + dt.timedelta(seconds=decision.retry_in_seconds)
    return _record(ctx, item, decision.status, exc.status, detail, retry_at)


def _record(
    ctx: ErasureContext,
    item: rows.Outgoing,
    status: str,
    http_status: int | None,
    detail: str,
    retry_at: dt.datetime | None = None,
) -> str:
    outcome = "retry" if status == rows.PENDING else status
    with ctx.sessions() as session:
        rows.settle(
            session,
            item.row_id,
            status=status,
            attempts=item.attempts + 1,
            http_status=http_status,
            detail=detail,
            now=ctx.clock(),
            retry_at=retry_at,
        )
        session.commit()
    metrics.count_destination_erasure(item.destination, outcome)
    fields = {"destination": item.destination, "row_id": item.row_id, "status": http_status}
    if outcome == rows.FAILED:
        log.error("erasure not passed on", detail=detail, **fields)
    elif outcome == "retry":
        log.warning("erasure at destination failed, retrying", detail=detail, **fields)
    else:
        log.info("erasure passed on", detail=detail, **fields)
    return outcome


def _fail_unreadable(ctx: ErasureContext, row_id: int) -> str:
    detail = "the sealed address cannot be opened: destination_erasure_key changed or unset"
    with ctx.sessions() as session:
        row = session.get(DestinationErasure, row_id)
        destination = row.destination if row is not None else "?"
        attempts = row.attempts + 1 if row is not None else 1
        rows.settle(
            session,
            row_id,
            status=rows.FAILED,
            attempts=attempts,
            http_status=None,
            detail=detail,
            now=ctx.clock(),
        )
        session.commit()
    metrics.count_destination_erasure(destination, rows.FAILED)
    log.error("erasure not passed on", detail=detail, destination=destination, row_id=row_id)
    return rows.FAILED
