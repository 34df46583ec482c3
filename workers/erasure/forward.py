"""Pass one erasure on to one destination through its vendor's delete call, and record the
outcome (docs/data-protection.md#at-destinations).

The row holds the address sealed (relay/ledger/destination_erasures.py); it is opened here for
the call only. The client classifies the answer in its one classification place
(workers/destinations/engage.py `classify`): success or "no such contact" is `done` (the
person is not there either way); a transient failure (5xx, timeout, rate limit) or an auth
failure (credentials an operator can fix) waits in the ledger and is tried again on the
delivery retry schedule until `max_retry_age_seconds`; anything else is `failed` for good.
Settled rows lose the sealed address. Logs, metrics and the recorded detail never hold the
address (the vendor's error body can echo it: it is redacted).
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
    def delete(self, address: str) -> str:
        """`deleted` or `absent`; raises a DeliveryError otherwise."""
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
        found = eraser.delete(item.address)
    except DeliveryError as exc:
        return _after_error(ctx, item, exc)
    detail = "deleted" if found == "deleted" else "no such contact at the destination"
    return _record(ctx, item, rows.DONE, 200 if found == "deleted" else None, detail)


def _after_error(ctx: ErasureContext, item: rows.Outgoing, exc: DeliveryError) -> str:
    detail = f"{exc.outcome}: {redactor([item.address])(str(exc))}"
    retryable = isinstance(exc, TransientError | AuthError)
    now = ctx.clock()
    age = (now - item.created_at).total_seconds()
    if not retryable or age >= ctx.settings.max_retry_age_seconds:
        gave_up = "" if not retryable else f"gave up after {item.attempts + 1} tries; "
        return _record(ctx, item, rows.FAILED, exc.status, gave_up + detail)
    schedule = ctx.settings.retry_schedule_seconds
    wait = schedule[min(item.attempts, len(schedule) - 1)]
    retry_at = now + dt.timedelta(seconds=wait * random.uniform(1 - JITTER, 1 + JITTER))
    return _record(ctx, item, rows.PENDING, exc.status, detail, retry_at)


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
