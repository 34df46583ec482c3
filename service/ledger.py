"""Writing accepted decisions: the event, its contact and its outbox rows in one transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from schemas.consent import contact_key
from service.db import insert_ignoring_conflicts
from service.models import Contact, Event, Outbox, utcnow


@dataclass(frozen=True)
class Decision:
    """A validated canonical decision, ready for the ledger."""

    email: str
    tracking_consent: str
    source: str
    source_id: str | None
    occurred_at: dt.datetime | None


@dataclass(frozen=True)
class Recorded:
    event_id: str
    contact_id: int
    duplicate: bool
    destinations: tuple[str, ...]


def find_duplicate(session: Session, source_name: str, delivery_id: str) -> Recorded | None:
    row = session.execute(
        select(Event.public_id, Event.contact_id).where(
            Event.source_name == source_name, Event.delivery_id == delivery_id
        )
    ).first()
    if row is None:
        return None
    return Recorded(
        event_id=row.public_id, contact_id=row.contact_id, duplicate=True, destinations=()
    )


def record_decision(
    session: Session,
    *,
    source_name: str,
    delivery_id: str,
    webhook_timestamp: int,
    body_sha256: str,
    decision: Decision,
    destinations: Iterable[str],
) -> Recorded:
    """Insert the event and one outbox row per destination, and commit; or find the duplicate.

    The unique (source, webhook-id) constraint makes duplicate suppression last as long as the
    ledger keeps the event, not a 5-minute window (webhook-gateways.md §1.1, §8.3).
    """
    existing = find_duplicate(session, source_name, delivery_id)
    if existing is not None:
        session.rollback()
        return existing
    now = utcnow()
    contact_id = _contact_id(session, contact_key(decision.email), now)
    event = Event(
        public_id=str(uuid.uuid4()),
        source_name=source_name,
        delivery_id=delivery_id,
        body_sha256=body_sha256,
        contact_id=contact_id,
        email=decision.email,
        decision=decision.tracking_consent,
        consent_source=decision.source,
        consent_source_id=decision.source_id,
        # When the payload gives no decision time, the time of first receipt stands in;
        # never the webhook timestamp, which is the attempt time (spec §1.1).
        occurred_at=decision.occurred_at or now,
        occurred_at_given=decision.occurred_at is not None,
        webhook_timestamp=webhook_timestamp,
        received_at=now,
    )
    session.add(event)
    try:
        session.flush()
        names = tuple(destinations)
        session.add_all(
            Outbox(event_id=event.id, destination=name, contact_id=contact_id, created_at=now)
            for name in names
        )
        session.commit()
    except IntegrityError:
        # A concurrent delivery of the same webhook-id won the insert.
        session.rollback()
        duplicate = find_duplicate(session, source_name, delivery_id)
        if duplicate is None:
            raise
        return duplicate
    return Recorded(event.public_id, contact_id, duplicate=False, destinations=names)


def _contact_id(session: Session, key: str, now: dt.datetime) -> int:
    found = session.scalar(select(Contact.id).where(Contact.email_key == key))
    if found is not None:
        return found
    insert_ignoring_conflicts(session, Contact, [{"email_key": key, "created_at": now}])
    return session.execute(select(Contact.id).where(Contact.email_key == key)).scalar_one()
