"""State-based delivery for one (destination, contact): write the contact's latest decision.

The task carries only (destination, contact id). It takes the contact's lease row, picks the
latest decision (greatest occurred_at, ties by arrival), and writes it unless it is already
what the destination holds. A retry of an old event therefore re-sends the newest state and
can never regress it (docs/reference/delivery-practice.md#last-decision-wins), and a backlog of
decisions for one contact costs one write. What happens after a failure is decided in
workers/delivery/policy.py and recorded by workers/delivery/outcomes.py; long waits live in
`next_attempt_at`, never in the broker (docs/reference/delivery-practice.md#celery-at-least-once).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session, sessionmaker
from structlog.contextvars import bound_contextvars

from relay.config.settings import DeliverySettings
from relay.domain import ConsentWrite
from relay.ledger import erasure
from relay.ledger import pauses as destinations
from relay.ledger.models import DeliveryState, Event, Outbox, utcnow
from relay.messaging.lanes import is_urgent
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from workers.delivery import outcomes, policy
from workers.delivery.leases import acquire_lease, owes_anything, release_lease
from workers.destinations.errors import DeliveryError
from workers.destinations.toolkit import Written
from workers.ratelimit.pace import RateLimiter, ThrottledError, one_write
from workers.ratelimit.turns import take_turn, turn_reach

log = get_logger(__name__)
MAX_ROUNDS = 5  # newer decisions that arrive while we write are picked up in the same lease


class ConsentWriter(Protocol):
    """What a destination client offers: write or probe, or raise a DeliveryError. A write
    returns the HTTP status, or a Written when the ledger needs more (a lossy mapping, or
    nothing written because the decision has no value there)."""

    def write(self, write: ConsentWrite) -> int | Written: ...

    def probe(self) -> int: ...


@dataclass
class DeliveryContext:
    sessions: sessionmaker[Session]
    writers: Mapping[str, ConsentWriter]
    settings: DeliverySettings
    clock: Callable[[], dt.datetime] = utcnow
    # Contacts one sweep may enqueue per rate-limited destination (workers/delivery/sweeper.py).
    sweep_budgets: Mapping[str, int] = field(default_factory=dict)
    # The shared limiter the writers pace with; read-back verification takes its share of it.
    limiter: RateLimiter | None = None


# Sends this contact's task again after `countdown` seconds, in the urgent lane or not; False
# when it could not be sent (the sweeper brings the contact back then).
Requeue = Callable[[float, bool], bool]


@dataclass
class Job:
    """One delivery run: which contact, for which destination, under whose lease; with
    `requeue`, a write the pace refused comes back by itself at its turn (`requeued`)."""

    destination: str
    contact_id: int
    owner: str
    requeue: Requeue | None = None
    requeued: bool = False

    @property
    def state_key(self) -> ColumnElement[bool]:
        return and_(
            DeliveryState.destination == self.destination,
            DeliveryState.contact_id == self.contact_id,
        )


def deliver_contact(
    ctx: DeliveryContext,
    destination: str,
    contact_id: int,
    owner: str,
    requeue: Requeue | None = None,
) -> str:
    """Deliver until the destination holds the latest decision, or a write fails.

    Returns an outcome: settled (nothing pending), paused, busy, nothing, up_to_date, waiting,
    delivered, failed, throttled, dead_lettered, erased, lease_lost.
    """
    job = Job(destination, contact_id, owner, requeue)
    with ctx.sessions() as session:
        if not owes_anything(session, job):
            session.rollback()
            return "settled"  # an earlier task delivered or settled every row
        if destinations.is_paused(session, destination):
            session.rollback()
            return "paused"  # events stay pending; a probe or an operator resumes
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
            release_lease(session, job, keep_dispatched=job.requeued)


def _deliver_once(session: Session, ctx: DeliveryContext, job: Job) -> str:
    latest = latest_event(session, job.destination, job.contact_id)
    state = session.get(DeliveryState, (job.destination, job.contact_id), populate_existing=True)
    if latest is None or state is None:
        session.rollback()
        return "nothing"
    # Every line logged while this decision is handled names it.
    with bound_contextvars(event_id=latest.public_id):
        return _settle_or_write(session, ctx, job, latest, state)


def _settle_or_write(
    session: Session, ctx: DeliveryContext, job: Job, latest: Event, state: DeliveryState
) -> str:
    ready = prepare_write(session, ctx, job, latest, state)
    if ready is not None:
        return ready
    started = ctx.clock()
    try:
        writer = ctx.writers[job.destination]
        with one_write(calls_per_write(writer)):
            result = writer.write(as_write(latest))
    except ThrottledError as exc:  # no rate-limit slot soon enough: nothing was sent
        return record_throttled(session, ctx, job, latest, state, exc)
    except DeliveryError as exc:
        return record_failure(session, ctx, job, latest, started, exc)
    return record_written(session, ctx, job, latest, started, result)


def calls_per_write(writer: object) -> int:
    """How many calls one write of this writer makes (its `calls_per_write`, else one)."""
    calls = getattr(writer, "calls_per_write", 1)
    return calls if isinstance(calls, int) and calls > 0 else 1


def prepare_write(
    session: Session, ctx: DeliveryContext, job: Job, latest: Event, state: DeliveryState
) -> str | None:
    """None when `latest` is to be written now, else the outcome (up_to_date, dead_lettered,
    waiting). Either way the transaction is over: never hold one (on SQLite: the write lock)
    across an HTTP call."""
    settled = _already_settled(session, job, latest, state, ctx.clock())
    if settled is not None:
        session.commit()
        return settled
    # Detach the loaded rows first: a rollback expires them, and reading an expired attribute
    # would silently begin a new transaction.
    session.expunge_all()
    session.rollback()
    if _backing_off(state, latest, ctx.clock()):
        return "waiting"
    return None


def record_throttled(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    state: DeliveryState,
    exc: ThrottledError,
) -> str:
    metrics.count_throttled(job.destination)
    now, urgent = ctx.clock(), is_urgent(latest.decision)
    turn = _turn(ctx, job, urgent, exc)
    retry_in = exc.retry_in if turn is None else turn
    retry_at = now + dt.timedelta(seconds=retry_in)
    # Marked dispatched while its own message is on the way: the sweeper leaves it alone for
    # `redispatch_after_seconds` (longer than any turn), and then only as a backstop.
    dispatched = now if turn is not None else None
    outcomes.record_throttled(
        session, job.state_key, job.owner, latest, state, retry_at, dispatched
    )
    if turn is not None and job.requeue is not None:  # enqueue after commit
        job.requeued = job.requeue(turn, urgent)
    return "throttled"


def _turn(ctx: DeliveryContext, job: Job, urgent: bool, exc: ThrottledError) -> float | None:
    """When the refused write comes back by itself (workers/ratelimit/turns.py), or None:
    it waits for the sweeper (no requeue offered, no limiter, or no turn soon enough)."""
    if job.requeue is None or ctx.limiter is None:
        return None
    calls = calls_per_write(ctx.writers[job.destination])
    reach = turn_reach(ctx.settings.redispatch_after_seconds)
    return take_turn(ctx.limiter, job.destination, calls, exc, urgent, reach)


def record_written(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    started: dt.datetime,
    result: int | Written,
) -> str:
    written = result if isinstance(result, Written) else Written(result)
    metrics.count_delivery(job.destination, written.outcome, written.status)
    return _record_success(session, ctx, job, latest, started, written)


def _already_settled(
    session: Session, job: Job, latest: Event, state: DeliveryState, now: dt.datetime
) -> str | None:
    """up_to_date when the destination holds `latest`; dead_lettered when `latest` was given
    up on (an older decision must not be written in its place); erased when the contact was
    erased (nothing is ever sent for the person again). Settles older rows."""
    if erasure.is_erased(session, job.contact_id):
        # Checked under the lease, which the erasure also takes: no write can overlap it.
        erasure.settle_erased(session, job.destination, job.contact_id, now)
        return "erased"
    if state.delivered_event_id == latest.id:
        outcomes.settle_outbox(session, job.destination, latest, now)
        return "up_to_date"
    status = session.scalar(
        select(Outbox.status).where(
            Outbox.destination == job.destination, Outbox.event_id == latest.id
        )
    )
    if status == "dead_lettered":
        outcomes.settle_outbox(session, job.destination, latest, now, status="dead_lettered")
        return "dead_lettered"
    return None


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


def as_write(event: Event) -> ConsentWrite:
    return ConsentWrite(
        email=event.email,
        tracking_consent=event.decision,
        source=event.consent_source,
        source_id=event.consent_source_id,
        occurred_at=event.occurred_at,
    )


def _record_success(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    started: dt.datetime,
    written: Written,
) -> str:
    now, status = ctx.clock(), written.status
    fenced = outcomes.fenced_update(
        session,
        job.state_key,
        job.owner,
        delivered_event_id=latest.id,
        delivered_at=now,
        attempts=0,
        rejections=0,
        failing_since=None,
        next_attempt_at=None,
        last_attempt_event_id=latest.id,
        last_status=status,
        last_error=None,
    )
    outcomes.log_attempt(
        session, job.destination, latest, started, now, written.outcome, status, written.detail
    )
    if not fenced:
        # Our lease expired and another worker took over; it records its own writes.
        session.commit()
        log.warning("lease lost", **_where(job, latest))
        return "lease_lost"
    settled = outcomes.settled_status(written.outcome)
    coalesced = outcomes.settle_outbox(session, job.destination, latest, now, settled)
    outcomes.supersede_dead_letters(session, job.destination, latest, now)
    session.commit()
    _report_success(job, latest, status, coalesced, now)
    return "delivered"


def _report_success(
    job: Job, latest: Event, status: int | None, coalesced: int, now: dt.datetime
) -> None:
    latency = (now - latest.received_at).total_seconds()
    metrics.count_coalesced(job.destination, coalesced)
    metrics.observe_latency(job.destination, latency, latest.decision)
    where = _where(job, latest)
    log.info("delivered", status=status, coalesced=coalesced, latency_s=round(latency, 3), **where)


def _where(job: Job, latest: Event) -> dict[str, Any]:
    return {
        "destination": job.destination,
        "contact_id": job.contact_id,
        "event_id": latest.public_id,
    }


def record_failure(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    started: dt.datetime,
    exc: DeliveryError,
) -> str:
    metrics.count_delivery(job.destination, exc.outcome, exc.status)
    now = ctx.clock()
    state = session.get(DeliveryState, (job.destination, job.contact_id), populate_existing=True)
    history = outcomes.failure_history(state, latest, exc, now)
    plan = policy.plan_after_failure(exc, history, now, ctx.settings)
    outcomes.log_attempt(
        session, job.destination, latest, started, now, exc.outcome, exc.status, str(exc)
    )
    outcome, recorded = _apply_plan(session, ctx, job, latest, history, plan, exc, now)
    session.commit()
    if not recorded:
        log.warning("lease lost", **_where(job, latest))
        return "lease_lost"
    if isinstance(plan, policy.DeadLetter):
        metrics.count_dead_lettered(job.destination, plan.reason)
    elif outcome == "failed":
        metrics.count_retry(job.destination, exc.outcome)
    where = {"outcome": exc.outcome, "status": exc.status, "attempts": history.attempts}
    log.warning("delivery failed", plan=outcome, **where, **_where(job, latest))
    return outcome


def _apply_plan(
    session: Session,
    ctx: DeliveryContext,
    job: Job,
    latest: Event,
    history: policy.FailureHistory,
    plan: policy.Plan,
    exc: DeliveryError,
    now: dt.datetime,
) -> tuple[str, bool]:
    key, owner = job.state_key, job.owner
    if isinstance(plan, policy.Pause):
        probe_in = dt.timedelta(seconds=ctx.settings.probe_interval_seconds)
        return "paused", outcomes.record_pause(
            session, key, owner, job.destination, latest, exc, now, probe_in
        )
    if isinstance(plan, policy.DeadLetter):
        return "dead_lettered", outcomes.record_dead_letter(
            session, key, owner, job.destination, latest, history, plan.reason, exc, now
        )
    return "failed", outcomes.record_retry(session, key, owner, latest, history, plan, exc)
