"""State-based delivery for one (destination, contact): write the contact's latest decision.

The task carries only (destination, contact id). It takes the contact's lease row, picks the
latest decision (greatest occurred_at, ties by arrival), and writes it unless it is already
what the destination holds. A retry of an old event therefore re-sends the newest state and
can never regress it (webhook-gateways.md §8.6). Long waits live in `next_attempt_at`,
never in the broker (§5.1); the sweeper re-enqueues due work.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, CursorResult, and_, case, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.config import DeliverySettings
from service.db import insert_ignoring_conflicts
from service.models import DeliveryAttempt, DeliveryState, Event, Outbox, utcnow
from workers.engage import ConsentWrite
from workers.errors import DeliveryError

log = logging.getLogger(__name__)
MAX_ROUNDS = 5  # newer decisions that arrive while we write are picked up in the same lease


class ConsentWriter(Protocol):
    """What a destination client offers the delivery loop: write, or raise a DeliveryError."""

    def write(self, write: ConsentWrite) -> int: ...


@dataclass
class DeliveryContext:
    sessions: sessionmaker[Session]
    writers: Mapping[str, ConsentWriter]
    settings: DeliverySettings
    clock: Callable[[], dt.datetime] = utcnow


@dataclass(frozen=True)
class Job:
    """One delivery run: which contact, for which destination, under whose lease."""

    destination: str
    contact_id: int
    owner: str

    @property
    def state_key(self) -> ColumnElement[bool]:
        return and_(
            DeliveryState.destination == self.destination,
            DeliveryState.contact_id == self.contact_id,
        )


def deliver_contact(ctx: DeliveryContext, destination: str, contact_id: int, owner: str) -> str:
    """Deliver until the destination holds the latest decision, or a write fails.

    Returns an outcome: busy, nothing, up_to_date, waiting, delivered, failed, lease_lost.
    """
    job = Job(destination, contact_id, owner)
    with ctx.sessions() as session:
        if not acquire_lease(session, ctx, job):
            return "busy"
        try:
            delivered, outcome = False, "nothing"
            for _round in range(MAX_ROUNDS):
                outcome = _deliver_once(session, ctx, job)
                if outcome != "delivered":
                    break
                delivered = True
            return "delivered" if delivered and outcome == "up_to_date" else outcome
        finally:
            release_lease(session, job)


def _deliver_once(session: Session, ctx: DeliveryContext, job: Job) -> str:
    latest = latest_event(session, job.destination, job.contact_id)
    state = session.get(DeliveryState, (job.destination, job.contact_id), populate_existing=True)
    if latest is None or state is None:
        session.rollback()
        return "nothing"
    now = ctx.clock()
    if state.delivered_event_id == latest.id:
        settle_outbox(session, job.destination, job.contact_id, latest, now)
        session.commit()
        return "up_to_date"
    # Never hold a transaction (on SQLite: the write lock) across the HTTP call. Detach the
    # loaded rows first: a rollback expires them, and reading an expired attribute would
    # silently begin a new transaction.
    session.expunge_all()
    session.rollback()
    if _backing_off(state, latest, now):
        return "waiting"
    started = ctx.clock()
    try:
        status = ctx.writers[job.destination].write(_as_write(latest))
    except DeliveryError as exc:
        _record_failure(session, ctx, job, latest, started, exc)
        return "failed"
    return _record_success(session, ctx, job, latest, started, status)


def latest_event(session: Session, destination: str, contact_id: int) -> Event | None:
    """The contact's latest decision owed to this destination (ties broken by arrival)."""
    return session.scalars(
        select(Event)
        .join(Outbox, and_(Outbox.event_id == Event.id, Outbox.destination == destination))
        .where(Event.contact_id == contact_id)
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(1)
    ).first()


def _backing_off(state: DeliveryState, latest: Event, now: dt.datetime) -> bool:
    # A new decision deserves a fresh attempt; the same one waits out its backoff.
    return (
        state.next_attempt_at is not None
        and state.next_attempt_at > now
        and state.last_attempt_event_id == latest.id
    )


def _as_write(event: Event) -> ConsentWrite:
    return ConsentWrite(
        email=event.email,
        tracking_consent=event.decision,
        source=event.consent_source,
        source_id=event.consent_source_id,
    )


def _record_success(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    started: dt.datetime,
    status: int,
) -> str:
    now = ctx.clock()
    fenced: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(DeliveryState)
        .where(job.state_key, DeliveryState.lease_owner == job.owner)
        .values(
            delivered_event_id=latest.id,
            delivered_at=now,
            attempts=0,
            next_attempt_at=None,
            last_attempt_event_id=latest.id,
            last_status=status,
            last_error=None,
        )
    )
    _log_attempt(session, job, latest, started, now, "delivered", status, None)
    if fenced.rowcount != 1:
        # Our lease expired and another worker took over; it records its own writes.
        session.commit()
        log.warning("lease lost destination=%s contact_id=%s", job.destination, job.contact_id)
        return "lease_lost"
    settle_outbox(session, job.destination, job.contact_id, latest, now)
    session.commit()
    log.info(
        "delivered destination=%s contact_id=%s event_id=%s status=%s",
        job.destination,
        job.contact_id,
        latest.public_id,
        status,
    )
    return "delivered"


def _record_failure(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    started: dt.datetime,
    exc: DeliveryError,
) -> None:
    now = ctx.clock()
    state = session.get(DeliveryState, (job.destination, job.contact_id), populate_existing=True)
    attempts = (state.attempts if state else 0) + 1
    delay = backoff_seconds(attempts, ctx.settings)
    session.execute(
        update(DeliveryState)
        .where(job.state_key, DeliveryState.lease_owner == job.owner)
        .values(
            attempts=attempts,
            next_attempt_at=now + dt.timedelta(seconds=delay),
            last_attempt_event_id=latest.id,
            last_status=exc.status,
            last_error=str(exc),
        )
    )
    _log_attempt(session, job, latest, started, now, exc.outcome, exc.status, str(exc))
    session.commit()
    log.warning(
        "delivery failed destination=%s contact_id=%s outcome=%s status=%s retry_in=%.0fs",
        job.destination,
        job.contact_id,
        exc.outcome,
        exc.status,
        delay,
    )


def backoff_seconds(attempts: int, settings: DeliverySettings) -> float:
    """Exponential from first_retry_seconds with ±20% jitter (not full jitter, which can retry
    at once: webhook-gateways.md §5.1, §8.4), never above max_retry_seconds."""
    cap = settings.max_retry_seconds
    value = min(settings.first_retry_seconds * 2 ** min(attempts - 1, 30), cap)
    value *= random.uniform(0.8, 1.2)
    # Never past the cap, but still spread below it so capped retries do not synchronise.
    return value if value <= cap else cap * random.uniform(0.8, 1.0)


def settle_outbox(
    session: Session, destination: str, contact_id: int, latest: Event, now: dt.datetime
) -> None:
    """Mark pending rows up to `latest`: its own row delivered, older ones superseded by it."""
    not_newer = select(Event.id).where(
        Event.contact_id == contact_id,
        or_(
            Event.occurred_at < latest.occurred_at,
            and_(Event.occurred_at == latest.occurred_at, Event.id <= latest.id),
        ),
    )
    session.execute(
        update(Outbox)
        .where(
            Outbox.destination == destination,
            Outbox.contact_id == contact_id,
            Outbox.status == "pending",
            Outbox.event_id.in_(not_newer),
        )
        .values(
            status=case((Outbox.event_id == latest.id, "delivered"), else_="superseded"),
            settled_by_event_id=latest.id,
            settled_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def _log_attempt(
    session: Session,
    job: Job,
    event: Event,
    started: dt.datetime,
    finished: dt.datetime,
    outcome: str,
    status: int | None,
    detail: str | None,
) -> None:
    session.add(
        DeliveryAttempt(
            destination=job.destination,
            contact_id=job.contact_id,
            event_id=event.id,
            started_at=started,
            finished_at=finished,
            outcome=outcome,
            http_status=status,
            detail=detail,
        )
    )


def acquire_lease(session: Session, ctx: DeliveryContext, job: Job) -> bool:
    """Take the contact's lease row: works the same on SQLite and PostgreSQL."""
    now = ctx.clock()
    insert_ignoring_conflicts(
        session, DeliveryState, [{"destination": job.destination, "contact_id": job.contact_id}]
    )
    taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(DeliveryState)
        .where(
            job.state_key,
            or_(DeliveryState.lease_owner.is_(None), DeliveryState.lease_expires_at < now),
        )
        .values(
            lease_owner=job.owner,
            lease_expires_at=now + dt.timedelta(seconds=ctx.settings.lease_seconds),
        )
    )
    session.commit()
    return taken.rowcount == 1


def release_lease(session: Session, job: Job) -> None:
    session.rollback()
    session.execute(
        update(DeliveryState)
        .where(job.state_key, DeliveryState.lease_owner == job.owner)
        .values(lease_owner=None, lease_expires_at=None, dispatched_at=None)
    )
    session.commit()
