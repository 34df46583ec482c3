"""Recording the outcome of one write in the ledger: delivered, retry later, dead-lettered,
or destination paused. Every change to the contact's delivery_state is fenced by the lease
owner, so a worker whose lease expired never overwrites its successor's record."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, and_, case, or_, select, update
from sqlalchemy.orm import Session

from relay.ledger import notifications
from relay.ledger import pauses as destinations
from relay.ledger.models import DeadLetter, DeliveryAttempt, DeliveryState, Event, Outbox
from relay.telemetry import metrics
from schemas.notifications import DEAD_LETTER_CREATED
from workers.delivery import policy
from workers.destinations.errors import DeliveryError, RejectedError

# A write the destination accepted but whose answer cannot show it was applied (MoEngage
# Track User answers 200 before processing, and drops an unknown customer_id silently). It is
# settled like a delivery (no retry can tell more) but never recorded as one: its attempt
# outcome, its metric label and its outbox status are `unverified`.
DELIVERED, UNVERIFIED = "delivered", "unverified"


def settled_status(outcome: str) -> str:
    """The outbox status of a successful write with this attempt outcome."""
    return UNVERIFIED if outcome == UNVERIFIED else DELIVERED


def fenced_update(session: Session, key: ColumnElement[bool], owner: str, **values: Any) -> bool:
    """Update the delivery_state row only while `owner` holds its lease."""
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(DeliveryState).where(key, DeliveryState.lease_owner == owner).values(**values)
    )
    return result.rowcount == 1


def not_newer_than(latest: Event) -> Any:
    """Ids of the contact's events ordered at or before `latest` (occurred_at, then arrival)."""
    return select(Event.id).where(
        Event.contact_id == latest.contact_id,
        or_(
            Event.occurred_at < latest.occurred_at,
            and_(Event.occurred_at == latest.occurred_at, Event.id <= latest.id),
        ),
    )


def settle_outbox(
    session: Session, destination: str, latest: Event, now: dt.datetime, status: str = "delivered"
) -> int:
    """Settle pending rows up to `latest`: its own row gets `status`, older ones superseded.
    Returns how many were superseded (decisions that will never be written: counted)."""
    settled = session.execute(
        update(Outbox)
        .where(
            Outbox.destination == destination,
            Outbox.contact_id == latest.contact_id,
            Outbox.status == "pending",
            Outbox.event_id.in_(not_newer_than(latest)),
        )
        .values(
            status=case((Outbox.event_id == latest.id, status), else_="superseded"),
            settled_by_event_id=latest.id,
            settled_at=now,
        )
        .returning(Outbox.status)
        .execution_options(synchronize_session=False)
    )
    superseded = sum(1 for (row_status,) in settled if row_status == "superseded")
    metrics.count_superseded(destination, superseded)
    return superseded


def supersede_dead_letters(
    session: Session, destination: str, latest: Event, now: dt.datetime
) -> None:
    """Open dead letters of older decisions need no operator once a newer one is settled."""
    session.execute(
        update(DeadLetter)
        .where(
            DeadLetter.destination == destination,
            DeadLetter.contact_id == latest.contact_id,
            DeadLetter.status == "open",
            DeadLetter.event_id != latest.id,
            DeadLetter.event_id.in_(not_newer_than(latest)),
        )
        .values(status="superseded", resolved_at=now)
        .execution_options(synchronize_session=False)
    )


def log_attempt(
    session: Session,
    destination: str,
    event: Event,
    started: dt.datetime,
    finished: dt.datetime,
    outcome: str,
    status: int | None,
    detail: str | None,
) -> None:
    session.add(
        DeliveryAttempt(
            destination=destination,
            contact_id=event.contact_id,
            event_id=event.id,
            started_at=started,
            finished_at=finished,
            outcome=outcome,
            http_status=status,
            detail=detail,
        )
    )


def failure_history(
    state: DeliveryState | None, latest: Event, exc: DeliveryError, now: dt.datetime
) -> policy.FailureHistory:
    """Counts restart with each new decision: every decision gets its own retry schedule."""
    rejected = isinstance(exc, RejectedError)
    same = state is not None and state.last_attempt_event_id == latest.id
    if state is None or not same or state.failing_since is None:
        return policy.FailureHistory(1, int(rejected), now)
    return policy.FailureHistory(
        state.attempts + 1, state.rejections + int(rejected), state.failing_since
    )


def record_retry(
    session: Session,
    key: ColumnElement[bool],
    owner: str,
    latest: Event,
    history: policy.FailureHistory,
    retry: policy.Retry,
    exc: DeliveryError,
) -> bool:
    return fenced_update(
        session,
        key,
        owner,
        attempts=history.attempts,
        rejections=history.rejections,
        failing_since=history.failing_since,
        next_attempt_at=retry.at,
        last_attempt_event_id=latest.id,
        last_status=exc.status,
        last_error=str(exc),
    )


def record_dead_letter(
    session: Session,
    key: ColumnElement[bool],
    owner: str,
    destination: str,
    latest: Event,
    history: policy.FailureHistory,
    reason: str,
    exc: DeliveryError,
    now: dt.datetime,
) -> bool:
    """Give up on `latest` with the evidence; its pending rows (and older ones) settle as
    dead_lettered/superseded so the sweeper stops, until an operator replays it."""
    if not fenced_update(
        session,
        key,
        owner,
        attempts=0,
        rejections=0,
        failing_since=None,
        next_attempt_at=None,
        last_attempt_event_id=latest.id,
        last_status=exc.status,
        last_error=str(exc),
    ):
        return False
    supersede_dead_letters(session, destination, latest, now)
    session.add(
        DeadLetter(
            destination=destination,
            contact_id=latest.contact_id,
            event_id=latest.id,
            reason=reason,
            detail=str(exc.args[0]) if exc.args else exc.outcome,
            last_status=exc.status,
            last_body=exc.body or None,
            attempts=history.attempts,
            first_failed_at=history.failing_since,
            created_at=now,
            status="open",
            replay_count=0,
        )
    )
    settle_outbox(session, destination, latest, now, status="dead_lettered")
    data: notifications.Data = {"reason": reason, "event_id": latest.id, "status": exc.status}
    notifications.record(session, DEAD_LETTER_CREATED, destination, data, now, latest.contact_id)
    return True


def record_pause(
    session: Session,
    key: ColumnElement[bool],
    owner: str,
    destination: str,
    latest: Event,
    exc: DeliveryError,
    now: dt.datetime,
    probe_in: dt.timedelta,
) -> bool:
    """Pause the destination; the contact keeps its counts (no retry is spent) and waits."""
    destinations.pause(
        session,
        destination,
        by="auth",
        reason=str(exc),
        status=exc.status,
        now=now,
        probe_in=probe_in,
    )
    return fenced_update(
        session,
        key,
        owner,
        next_attempt_at=None,
        last_status=exc.status,
        last_error=str(exc),
    )


def record_throttled(
    session: Session,
    key: ColumnElement[bool],
    owner: str,
    latest: Event,
    state: DeliveryState,
    retry_at: dt.datetime,
    dispatched_at: dt.datetime | None = None,
) -> None:
    """The shared rate limit had no slot soon enough: nothing was sent, nothing is counted
    against the decision; it is tried again at `retry_at` (by its own message when
    `dispatched_at` is set, else by the sweeper)."""
    values: dict[str, Any] = {"next_attempt_at": retry_at, "last_attempt_event_id": latest.id}
    if dispatched_at is not None:
        values["dispatched_at"] = dispatched_at
    if state.last_attempt_event_id != latest.id:
        values.update(attempts=0, rejections=0, failing_since=None)
    fenced_update(session, key, owner, **values)
    session.commit()
