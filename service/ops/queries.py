"""Read-only ledger queries behind the operator page (`/ops`): a handful per page, each on an
index (or bounded by a LIMIT), so the page stays fast on a large ledger.

Nothing here writes: replay and pause go through `relay.ledger.dead_letters` and
`relay.ledger.pauses`, shared with the admin API and the CLI.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from relay.ledger.models import (
    Contact,
    DeadLetter,
    DeliveryAttempt,
    DeliveryState,
    Erasure,
    Event,
    Outbox,
)
from schemas.consent import contact_key

# `unverified`: accepted by a destination whose answer cannot show the write was applied
# (workers/delivery/outcomes.py); settled, but an operator should check it there.
OUTBOX_STATUSES = ("pending", "delivered", "unverified", "superseded", "dead_lettered")
# The status page reads attempts of the last 24 h among the newest ATTEMPT_WINDOW rows (by
# primary key): delivery_attempts has no index on time, and the schema stays as it is.
ATTEMPT_WINDOW = 10_000
RECENT = dt.timedelta(hours=24)
# The contact page shows at most this many decisions (newest first) and attempts.
MAX_DECISIONS = 200
MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class DestinationCounts:
    outbox: dict[str, int]  # outbox status -> rows
    open_dead_letters: int
    oldest_pending: dt.datetime | None  # when the oldest pending decision was received


@dataclass(frozen=True)
class StatusCounts:
    accepted: int
    totals: dict[str, int]  # outbox status -> rows, every destination
    open_dead_letters: int
    oldest_pending: dt.datetime | None
    per_destination: dict[str, DestinationCounts]
    attempts: dict[str, int]  # outcome -> attempts in the last 24 h (newest ATTEMPT_WINDOW)
    attempts_since: dt.datetime


def status_counts(session: Session, names: Iterable[str], now: dt.datetime) -> StatusCounts:
    """Five queries: events, outbox by status, oldest pending, open dead letters, attempts."""
    accepted = session.scalar(select(func.count(Event.id))) or 0
    outbox: dict[str, dict[str, int]] = defaultdict(dict)
    for destination, status, count in session.execute(
        select(Outbox.destination, Outbox.status, func.count()).group_by(
            Outbox.status, Outbox.destination
        )
    ):
        outbox[destination][status] = count
    oldest = dict(
        session.execute(
            select(Outbox.destination, func.min(Outbox.created_at))
            .where(Outbox.status == "pending")
            .group_by(Outbox.destination)
        ).all()
    )
    dead = dict(
        session.execute(
            select(DeadLetter.destination, func.count())
            .where(DeadLetter.status == "open")
            .group_by(DeadLetter.destination)
        ).all()
    )
    since = now - RECENT
    per = {
        name: DestinationCounts(
            {status: outbox[name].get(status, 0) for status in OUTBOX_STATUSES},
            dead.get(name, 0),
            oldest.get(name),
        )
        for name in sorted({*names, *outbox, *dead})
    }
    return StatusCounts(
        accepted=accepted,
        totals={s: sum(c.outbox[s] for c in per.values()) for s in OUTBOX_STATUSES},
        open_dead_letters=sum(dead.values()),
        oldest_pending=min((t for t in oldest.values() if t is not None), default=None),
        per_destination=per,
        attempts=_recent_attempts(session, since),
        attempts_since=since,
    )


def _recent_attempts(session: Session, since: dt.datetime) -> dict[str, int]:
    newest = (
        select(DeliveryAttempt.outcome, DeliveryAttempt.started_at)
        .order_by(DeliveryAttempt.id.desc())
        .limit(ATTEMPT_WINDOW)
        .subquery()
    )
    rows = session.execute(
        select(newest.c.outcome, func.count())
        .where(newest.c.started_at >= since)
        .group_by(newest.c.outcome)
        .order_by(newest.c.outcome)
    )
    return {outcome: count for outcome, count in rows}


# --- one contact's history ----------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRow:
    started_at: dt.datetime
    finished_at: dt.datetime
    outcome: str
    http_status: int | None
    detail: str | None


@dataclass(frozen=True)
class DeliveryRow:
    """One decision's outbox row for one destination, with the attempts to write it."""

    destination: str
    status: str
    settled_by: str | None  # public id of the event that settled the row
    settled_at: dt.datetime | None
    attempts: list[AttemptRow] = field(default_factory=list)


@dataclass(frozen=True)
class DecisionRow:
    event: Event
    deliveries: list[DeliveryRow]


@dataclass(frozen=True)
class HeldRow:
    """What one destination holds for the contact (delivery_state)."""

    destination: str
    delivered: Event | None
    delivered_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    failures: int


@dataclass(frozen=True)
class ContactHistory:
    contact: Contact
    decisions: list[DecisionRow]  # newest first (occurred_at, then arrival)
    truncated: bool  # more than MAX_DECISIONS decisions: the oldest are not shown
    held: list[HeldRow]
    dead_letters: list[tuple[DeadLetter, Event]]  # newest first, with the decision


def find_contact(session: Session, email: str) -> int | None:
    """The contact id of an address, compared case-insensitively (unique index)."""
    key = contact_key(email)
    if not key:
        return None
    return session.scalar(select(Contact.id).where(Contact.email_key == key))


def contact_history(
    session: Session, contact_id: int, names: Iterable[str]
) -> ContactHistory | None:
    """Six indexed queries: the contact, its events, their outbox rows, its attempts, its
    delivery state and its dead letters."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return None
    events = list(
        session.scalars(
            select(Event)
            .where(Event.contact_id == contact_id)
            .order_by(Event.occurred_at.desc(), Event.id.desc())
            .limit(MAX_DECISIONS + 1)
        )
    )
    truncated = len(events) > MAX_DECISIONS
    events = events[:MAX_DECISIONS]
    rows = _outbox_rows(session, [event.id for event in events])
    destinations = sorted({*names, *(row.destination for row in rows)})
    attempts = _attempts(session, contact_id, destinations)
    public = {event.id: event.public_id for event in events}
    decisions = [DecisionRow(event, _deliveries(event, rows, attempts, public)) for event in events]
    return ContactHistory(
        contact,
        decisions,
        truncated,
        _held(session, contact_id, destinations),
        _dead_letters(session, contact_id, destinations),
    )


def _outbox_rows(session: Session, event_ids: Sequence[int]) -> list[Outbox]:
    if not event_ids:
        return []
    query = select(Outbox).where(Outbox.event_id.in_(event_ids))  # uq (event_id, destination)
    return list(session.scalars(query.order_by(Outbox.destination)))


def _attempts(
    session: Session, contact_id: int, destinations: Sequence[str]
) -> dict[tuple[int, str], list[AttemptRow]]:
    """Attempts by (event id, destination), oldest first; ix_attempts_contact."""
    query = (
        select(DeliveryAttempt)
        .where(
            DeliveryAttempt.destination.in_(destinations),
            DeliveryAttempt.contact_id == contact_id,
        )
        .order_by(DeliveryAttempt.id.desc())
        .limit(MAX_ATTEMPTS)
    )
    grouped: dict[tuple[int, str], list[AttemptRow]] = defaultdict(list)
    for a in reversed(list(session.scalars(query))):
        row = AttemptRow(a.started_at, a.finished_at, a.outcome, a.http_status, a.detail)
        grouped[(a.event_id, a.destination)].append(row)
    return grouped


def _deliveries(
    event: Event,
    rows: Sequence[Outbox],
    attempts: dict[tuple[int, str], list[AttemptRow]],
    public: dict[int, str],
) -> list[DeliveryRow]:
    return [
        DeliveryRow(
            destination=row.destination,
            status=row.status,
            settled_by=_settled_by(row.settled_by_event_id, public),
            settled_at=row.settled_at,
            attempts=attempts.get((event.id, row.destination), []),
        )
        for row in rows
        if row.event_id == event.id
    ]


def _settled_by(event_id: int | None, public: dict[int, str]) -> str | None:
    if event_id is None:
        return None
    return public.get(event_id, f"event #{event_id}")


def _held(session: Session, contact_id: int, destinations: Sequence[str]) -> list[HeldRow]:
    states = session.execute(
        select(DeliveryState, Event)
        .outerjoin(Event, Event.id == DeliveryState.delivered_event_id)
        .where(
            DeliveryState.destination.in_(destinations),
            DeliveryState.contact_id == contact_id,
        )
        .order_by(DeliveryState.destination)
    )
    return [
        HeldRow(state.destination, event, state.delivered_at, state.next_attempt_at, state.attempts)
        for state, event in states
    ]


def _dead_letters(
    session: Session, contact_id: int, destinations: Sequence[str]
) -> list[tuple[DeadLetter, Event]]:
    query = (
        select(DeadLetter, Event)
        .join(Event, Event.id == DeadLetter.event_id)
        .where(DeadLetter.destination.in_(destinations), DeadLetter.contact_id == contact_id)
        .order_by(DeadLetter.created_at.desc(), DeadLetter.id.desc())
    )
    return [(dead, event) for dead, event in session.execute(query)]


def dead_letter_contacts(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Contact id of each dead letter (primary key lookups), for links to the history page."""
    if not ids:
        return {}
    rows = session.execute(
        select(DeadLetter.id, DeadLetter.contact_id).where(DeadLetter.id.in_(ids))
    )
    return {dead_id: contact_id for dead_id, contact_id in rows}


def erasures(session: Session, contact_id: int) -> list[Erasure]:
    """The contact's erasures (at most one today), oldest first."""
    query = select(Erasure).where(Erasure.contact_id == contact_id).order_by(Erasure.id)
    return list(session.scalars(query))
