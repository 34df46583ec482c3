"""Dead letters as operators see them: the filters, the views, list and inspect (the admin
API, the CLI and the operator page share these; replay is in replaying.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from relay.ledger.models import Contact, DeadLetter, DeliveryAttempt, Event
from schemas.admin import STATUS_FILTERS
from schemas.consent import contact_key

HISTORY_LIMIT = 50
_Query = TypeVar("_Query", bound=Select)  # keeps the caller's row types (variadic in 2.1)


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


def list_dead_letters(session: Session, filters: DeadLetterFilters) -> list[DeadLetterView]:
    """Newest first; one query, whatever the page size."""
    query = filtered(select(DeadLetter, Event), filters)
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


def filtered(query: _Query, filters: DeadLetterFilters) -> _Query:
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
