"""The outbox sweeper, run by Celery beat every few seconds.

An accepted event must never depend on the broker keeping a message: the embedded transport
can lose one on a crash and kombu's SQL transport can drop a publish (
docs/reference/delivery-practice.md#embedded-brokers). So the ledger is the source of truth and this
re-enqueues every contact with pending outbox rows whose retry is due, whose lease is free, and that
was not dispatched recently.

Withdrawals and denials go first, into their destination's urgent lane (relay/messaging/lanes.py).
A rate-limited destination gets at most its sweep budget of contacts per sweep (about what its
pace delivers until the next sweep): a backlog far beyond its pace would only be refused
again by the rate limiter, each refusal costing a worker process a task run.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import and_, case, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from relay.ledger import pauses as destinations
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import DeliveryState, Event, Outbox
from relay.messaging.lanes import URGENT_STATES
from relay.telemetry.logs import get_logger
from workers.delivery.batch import batch_size
from workers.delivery.contact import DeliveryContext

log = get_logger(__name__)
# Leave the intake's own enqueue a moment before the sweeper sends a second message.
FRESH_GRACE = dt.timedelta(seconds=2)

Publish = Callable[[str, int, bool], None]  # destination, contact id, urgent
PublishBatch = Callable[[str, list[int], bool], None]  # destination, contact ids, urgent
PublishProbe = Callable[[str], None]


def sweep(ctx: DeliveryContext, publish: Publish, publish_batch: PublishBatch | None = None) -> int:
    """Enqueue due contacts; return how many were enqueued. With `publish_batch`, the due
    contacts of a batching destination (workers/delivery/batch.py) go in batches of its size."""
    now = ctx.clock()
    with ctx.sessions() as session:
        ranked = due_contacts(session, ctx, now)
        due = [(destination, contact_id) for destination, contact_id, _urgent in ranked]
        urgent = {(d, c) for d, c, is_urgent in ranked if is_urgent}
        if not due:
            session.rollback()
            return 0
        insert_ignoring_conflicts(
            session, DeliveryState, [{"destination": d, "contact_id": c} for d, c in due]
        )
        session.execute(
            update(DeliveryState)
            .where(tuple_(DeliveryState.destination, DeliveryState.contact_id).in_(due))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
        fresh = _never_failed(session, ctx, due) if publish_batch is not None else set()
        session.commit()  # record the dispatch before publishing (enqueue after commit)
    singles, batches = plan_batches(ctx, due, fresh)
    for destination, contact_id in singles:
        publish(destination, contact_id, (destination, contact_id) in urgent)
    for destination, contact_ids in batches:
        # A batch that carries a withdrawal travels in the urgent lane as a whole.
        hurry = any((destination, contact_id) in urgent for contact_id in contact_ids)
        publish_batch(destination, contact_ids, hurry)  # type: ignore[misc]  # batches need it
    log.info("sweeper enqueued contacts", count=len(due), batches=len(batches))
    return len(due)


def plan_batches(
    ctx: DeliveryContext, due: list[tuple[str, int]], fresh: set[tuple[str, int]]
) -> tuple[list[tuple[str, int]], list[tuple[str, list[int]]]]:
    """Split the due contacts into single deliveries and batches: only `fresh` contacts (no
    failure of their current decision) of a batching destination are batched."""
    groups: dict[str, list[int]] = defaultdict(list)
    singles = []
    for destination, contact_id in due:
        if (destination, contact_id) in fresh:
            groups[destination].append(contact_id)
        else:
            singles.append((destination, contact_id))
    batches = []
    for destination, ids in groups.items():
        size = batch_size(ctx.writers[destination])
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            if len(chunk) == 1:
                singles.append((destination, chunk[0]))
            else:
                batches.append((destination, chunk))
    return singles, batches


def _never_failed(
    session: Session, ctx: DeliveryContext, due: list[tuple[str, int]]
) -> set[tuple[str, int]]:
    batching = {name for name, writer in ctx.writers.items() if batch_size(writer) > 1}
    candidates = [(d, c) for d, c in due if d in batching]
    if not candidates:
        return set()
    rows = session.execute(
        select(DeliveryState.destination, DeliveryState.contact_id).where(
            tuple_(DeliveryState.destination, DeliveryState.contact_id).in_(candidates),
            DeliveryState.attempts == 0,
        )
    )
    return {(row[0], row[1]) for row in rows}


def due_contacts(
    session: Session, ctx: DeliveryContext, now: dt.datetime
) -> list[tuple[str, int, bool]]:
    """(destination, contact id, urgent) of the contacts to enqueue: urgent ones (a pending
    withdrawal or denial) first, then the longest waiting; each destination within its budget.

    One query per destination, each limited to its own budget: a single query limited to
    `sweep_batch_size` let one destination's old backlog fill every sweep, so another's rows
    beyond it were never swept."""
    settings = ctx.settings
    # A paused destination gets no work (its events wait, pending); its probe resumes it.
    active = sorted(set(ctx.writers) - destinations.paused_names(session))
    rows: list[tuple[str, int, bool]] = []
    for name in active:
        limit = min(
            ctx.sweep_budgets.get(name, settings.sweep_batch_size), settings.sweep_batch_size
        )
        rows += _due_for(session, name, now, settings.redispatch_after_seconds, limit)
    rows.sort(key=lambda row: not row[2])  # urgent first; stable: each destination's order
    return rows[: settings.sweep_batch_size]


def _due_for(
    session: Session, destination: str, now: dt.datetime, redispatch_after: float, limit: int
) -> list[tuple[str, int, bool]]:
    redispatch = now - dt.timedelta(seconds=redispatch_after)
    urgent = func.max(case((Event.decision.in_(sorted(URGENT_STATES)), 1), else_=0))
    query = (
        select(Outbox.destination, Outbox.contact_id, urgent)
        .join(Event, Event.id == Outbox.event_id)
        .outerjoin(
            DeliveryState,
            and_(
                DeliveryState.destination == Outbox.destination,
                DeliveryState.contact_id == Outbox.contact_id,
            ),
        )
        .where(
            Outbox.status == "pending",
            Outbox.destination == destination,
            Outbox.created_at <= now - FRESH_GRACE,
            or_(DeliveryState.next_attempt_at.is_(None), DeliveryState.next_attempt_at <= now),
            or_(DeliveryState.dispatched_at.is_(None), DeliveryState.dispatched_at <= redispatch),
            or_(DeliveryState.lease_expires_at.is_(None), DeliveryState.lease_expires_at < now),
        )
        .group_by(Outbox.destination, Outbox.contact_id)
        .order_by(urgent.desc(), func.min(Outbox.id))
        .limit(limit)
    )
    return [(row[0], row[1], bool(row[2])) for row in session.execute(query)]


def schedule_probes(ctx: DeliveryContext, publish_probe: PublishProbe) -> list[str]:
    """Enqueue one probe per paused destination whose probe is due; return their names."""
    now = ctx.clock()
    interval = dt.timedelta(seconds=ctx.settings.probe_interval_seconds)
    with ctx.sessions() as session:
        due = [name for name in destinations.probes_due(session, now) if name in ctx.writers]
        for name in due:  # claim the probe before publishing, so one sweep sends one
            destinations.record_probe(session, name, error=None, now=now, next_in=interval)
        session.commit()
    for name in due:
        publish_probe(name)
    return due


def probe_destination(ctx: DeliveryContext, destination: str) -> str:
    """Call the destination's probe; resume it on success, else note why and wait."""
    now = ctx.clock()
    interval = dt.timedelta(seconds=ctx.settings.probe_interval_seconds)
    try:
        ctx.writers[destination].probe()
    except Exception as exc:  # noqa: BLE001 - any failure keeps the pause; it is recorded
        with ctx.sessions() as session:
            destinations.record_probe(
                session, destination, error=str(exc)[:500], now=now, next_in=interval
            )
            session.commit()
        log.warning("probe failed", destination=destination, error=type(exc).__name__)
        return "still_paused"
    with ctx.sessions() as session:
        resumed = destinations.resume(session, destination, by="probe", now=now)
        session.commit()
    log.warning("destination resumed after a successful probe", destination=destination)
    return "resumed" if resumed else "not_paused"
