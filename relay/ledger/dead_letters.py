"""Dead letters for operators: list, inspect and replay them (shared by the admin API and CLI).

The delivery worker writes a dead letter when a contact's latest decision could not be
delivered (refused, or failing for longer than the max age) and marks the pair's pending
outbox rows `dead_lettered`. Replay only makes those rows pending again and clears the retry
state: delivery is state-based, so the worker then writes the contact's *latest* decision,
which can never be older than what the destination holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy import Select, select, tuple_, update
from sqlalchemy.orm import Session

from relay.errors import RelayError
from relay.ledger.models import Contact, DeadLetter, DeliveryAttempt, DeliveryState, Event, Outbox
from schemas.admin import STATUS_FILTERS
from schemas.consent import contact_key

SKIP_REASONS = {
    "replayed": "already replayed",
    "superseded": "superseded by a newer decision",
}
HISTORY_LIMIT = 50
# Bounds the IN lists (SQLite allows 32766 parameters; a pair costs two) and the rows locked
# per statement, so that replaying 10,000 dead letters is a few dozen bulk statements.
CHUNK_SIZE = 500
# Publishing is only an accelerator: beat's sweeper enqueues every pending outbox row anyway.
# Past this many pairs a request would spend seconds on the broker for no gain.
ENQUEUE_LIMIT = 1000

Pair = tuple[str, int]
_Query = TypeVar("_Query", bound=Select)  # keeps the caller's row types (variadic in 2.1)


class ReplayRefused(RelayError, ValueError):
    """Replay was asked without ids, filters or an explicit `all`, or with ambiguous ones
    (the admin API answers 422 with the message; the CLI prints it)."""

    http_status = 422


@dataclass(frozen=True)
class DeadLetterFilters:
    """Selects dead letters. `since` is inclusive and `until` exclusive, on `created_at`."""

    status: str = "open"
    destination: str | None = None
    source: str | None = None  # the configured webhook source (events.source_name)
    email: str | None = None  # compared case-insensitively, as contacts are identified
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUS_FILTERS:
            raise ValueError(f"status must be one of {', '.join(STATUS_FILTERS)}")

    def selects_something(self) -> bool:
        """Whether any narrowing filter is set; replay refuses an empty selection."""
        narrowing = (self.destination, self.source, self.email, self.since, self.until)
        return any(value is not None for value in narrowing)


class _AsJson:
    def as_json(self) -> dict[str, Any]:
        return {
            key: value.isoformat() if isinstance(value, dt.datetime) else value
            for key, value in self.__dict__.items()
        }


@dataclass(frozen=True)
class DeadLetterView(_AsJson):
    id: int
    destination: str
    source: str
    email: str  # as the sender wrote it (Engage receives it unchanged)
    decision: str
    consent_source: str
    consent_source_id: str | None
    occurred_at: dt.datetime
    received_at: dt.datetime
    event_id: str  # the event's public id
    reason: str
    detail: str
    last_status: int | None
    last_body: str | None
    attempts: int
    first_failed_at: dt.datetime | None
    created_at: dt.datetime
    status: str
    resolved_at: dt.datetime | None
    replay_count: int


@dataclass(frozen=True)
class AttemptView(_AsJson):
    started_at: dt.datetime
    finished_at: dt.datetime
    outcome: str
    http_status: int | None
    detail: str | None
    event_id: str  # public id of the decision that was being written


@dataclass(frozen=True)
class DeadLetterDetail:
    dead_letter: DeadLetterView
    history: tuple[AttemptView, ...]  # oldest first, at most HISTORY_LIMIT

    def as_json(self) -> dict[str, Any]:
        return {**self.dead_letter.as_json(), "history": [a.as_json() for a in self.history]}


@dataclass
class ReplayResult:
    replayed: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)
    pairs: set[Pair] = field(default_factory=set)  # (destination, contact_id) to enqueue


def list_dead_letters(session: Session, filters: DeadLetterFilters) -> list[DeadLetterView]:
    """Newest first; one query, whatever the page size."""
    query = _filtered(select(DeadLetter, Event), filters)
    query = query.order_by(DeadLetter.created_at.desc(), DeadLetter.id.desc())
    query = query.offset(filters.offset).limit(filters.limit)
    return [_view(dead, event) for dead, event in session.execute(query)]


def get_dead_letter(session: Session, dead_letter_id: int) -> DeadLetterDetail | None:
    row = session.execute(
        select(DeadLetter, Event)
        .join(Event, Event.id == DeadLetter.event_id)
        .where(DeadLetter.id == dead_letter_id)
    ).first()
    if row is None:
        return None
    dead, event = row
    return DeadLetterDetail(_view(dead, event), tuple(_history(session, dead)))


def _history(session: Session, dead: DeadLetter) -> list[AttemptView]:
    """The attempts that led to the dead letter: the last HISTORY_LIMIT, oldest first."""
    query = (
        select(DeliveryAttempt, Event.public_id)
        .join(Event, Event.id == DeliveryAttempt.event_id)
        .where(
            DeliveryAttempt.destination == dead.destination,
            DeliveryAttempt.contact_id == dead.contact_id,
            DeliveryAttempt.started_at <= dead.created_at,
        )
        .order_by(DeliveryAttempt.started_at.desc(), DeliveryAttempt.id.desc())
        .limit(HISTORY_LIMIT)
    )
    views = [
        AttemptView(a.started_at, a.finished_at, a.outcome, a.http_status, a.detail, public_id)
        for a, public_id in session.execute(query)
    ]
    return views[::-1]


def replay(
    session: Session,
    *,
    ids: Sequence[int] | None = None,
    filters: DeadLetterFilters | None = None,
    replay_all: bool = False,
    now: dt.datetime,
) -> ReplayResult:
    """Send open dead letters back to the outbox. The caller commits, then enqueues
    `result.pairs` (see `enqueue`). Idempotent: a dead letter is replayed at most once.

    Give exactly one of `ids`, narrowing `filters` (which select *open* dead letters; their
    status, limit and offset are ignored) or `replay_all=True`."""
    result = ReplayResult()
    for chunk in _chunks(_targets(session, ids, filters, replay_all)):
        _replay_chunk(session, chunk, now, result)
    return result


def _targets(
    session: Session,
    ids: Sequence[int] | None,
    filters: DeadLetterFilters | None,
    replay_all: bool,
) -> list[int]:
    narrowed = filters is not None and filters.selects_something()
    if sum((bool(ids), narrowed, replay_all)) != 1:
        raise ReplayRefused(
            "give dead letter ids, filters (destination, source, email, since, until) "
            "or all, and only one of them"
        )
    if ids:
        return list(dict.fromkeys(ids))  # de-duplicated, in the order given
    selection = replace(filters or DeadLetterFilters(), status="open", limit=None, offset=0)
    return list(session.scalars(_filtered(select(DeadLetter.id), selection)))


def _replay_chunk(
    session: Session, chunk: list[int], now: dt.datetime, result: ReplayResult
) -> None:
    # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers) makes a
    # concurrent replay of the same ids wait and then see them replayed: replayed once.
    rows = session.execute(
        select(DeadLetter.id, DeadLetter.destination, DeadLetter.contact_id, DeadLetter.status)
        .where(DeadLetter.id.in_(chunk))
        .with_for_update()
    ).all()
    found = {row.id: row for row in rows}
    opened: list[int] = []
    pairs: set[Pair] = set()
    for dead_id in chunk:
        row = found.get(dead_id)
        if row is None:
            result.unknown.append(dead_id)
        elif row.status != "open":
            result.skipped[dead_id] = SKIP_REASONS.get(row.status, f"status is {row.status}")
        else:
            opened.append(dead_id)
            pairs.add((row.destination, row.contact_id))
    if opened:
        _reopen(session, opened, pairs, now)
        result.replayed.extend(opened)
        result.pairs |= pairs


def _reopen(session: Session, dead_ids: list[int], pairs: set[Pair], now: dt.datetime) -> None:
    """Three bulk UPDATEs per chunk, whatever the number of dead letters in it."""
    no_sync = {"synchronize_session": False}
    session.execute(
        update(DeadLetter)
        .where(DeadLetter.id.in_(dead_ids), DeadLetter.status == "open")
        .values(status="replayed", resolved_at=now, replay_count=DeadLetter.replay_count + 1)
        .execution_options(**no_sync)
    )
    session.execute(
        update(Outbox)
        .where(
            Outbox.status == "dead_lettered",
            tuple_(Outbox.destination, Outbox.contact_id).in_(sorted(pairs)),
        )
        .values(status="pending", settled_by_event_id=None, settled_at=None)
        .execution_options(**no_sync)
    )
    # A clean slate: the replayed decision gets the full retry budget again, at once.
    session.execute(
        update(DeliveryState)
        .where(tuple_(DeliveryState.destination, DeliveryState.contact_id).in_(sorted(pairs)))
        .values(
            attempts=0, rejections=0, failing_since=None, next_attempt_at=None, dispatched_at=None
        )
        .execution_options(**no_sync)
    )


def enqueue(
    pairs: Iterable[Pair], publish: Callable[[str, int], bool], limit: int = ENQUEUE_LIMIT
) -> int:
    """Publish delivery tasks after the commit; return how many were sent.

    Stops at the first failure and after `limit`: the rows are pending, so beat's sweeper
    enqueues whatever is left within a few sweeps."""
    sent = 0
    for destination, contact_id in sorted(pairs)[:limit]:
        if not publish(destination, contact_id):
            break
        sent += 1
    return sent


def _filtered(query: _Query, filters: DeadLetterFilters) -> _Query:
    query = query.select_from(DeadLetter).join(Event, Event.id == DeadLetter.event_id)
    if filters.status != "all":
        query = query.where(DeadLetter.status == filters.status)
    if filters.destination is not None:
        query = query.where(DeadLetter.destination == filters.destination)
    if filters.source is not None:
        query = query.where(Event.source_name == filters.source)
    if filters.email is not None:
        contact = select(Contact.id).where(Contact.email_key == contact_key(filters.email))
        query = query.where(DeadLetter.contact_id == contact.scalar_subquery())
    if filters.since is not None:
        query = query.where(DeadLetter.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(DeadLetter.created_at < filters.until)
    return query


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK_SIZE):
        yield ids[start : start + CHUNK_SIZE]


def _view(dead: DeadLetter, event: Event) -> DeadLetterView:
    return DeadLetterView(
        id=dead.id,
        destination=dead.destination,
        source=event.source_name,
        email=event.email,
        decision=event.decision,
        consent_source=event.consent_source,
        consent_source_id=event.consent_source_id,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        event_id=event.public_id,
        reason=dead.reason,
        detail=dead.detail,
        last_status=dead.last_status,
        last_body=dead.last_body,
        attempts=dead.attempts,
        first_failed_at=dead.first_failed_at,
        created_at=dead.created_at,
        status=dead.status,
        resolved_at=dead.resolved_at,
        replay_count=dead.replay_count,
    )
