"""Writing accepted decisions: the event, its contact and its outbox rows in one transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relay.domain import Decision
from relay.ledger.chain import content_hash, new_salt, subject_digest
from relay.ledger.chain_store import advance, event_content
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import Contact, Event, IgnoredEvent, Outbox, evidence_columns, utcnow
from relay.ledger.record_pg import record_new_decisions
from schemas.consent import contact_key


@dataclass(frozen=True)
class Recorded:
    event_id: str
    contact_id: int
    duplicate: bool
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class Incoming:
    """One event of a delivery: a decision to record, or the reason it is ignored."""

    delivery_id: str  # the sender's id for this event (webhook-id, HubSpot eventId, ...)
    event_type: str
    decision: Decision | None = None
    ignored: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one incoming event: accepted, duplicate or ignored."""

    delivery_id: str
    status: str
    recorded: Recorded | None = None
    reason: str | None = None


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
    ledger keeps the event, not a 5-minute window
    (docs/reference/standard-webhooks.md#the-specification,
    docs/reference/delivery-practice.md#dedup-window).
    """
    [outcome] = record_events(
        session,
        source_name=source_name,
        webhook_timestamp=webhook_timestamp,
        body_sha256=body_sha256,
        incoming=[Incoming(delivery_id, "decision", decision=decision)],
        destinations=destinations,
    )
    assert outcome.recorded is not None
    return outcome.recorded


def record_events(
    session: Session,
    *,
    source_name: str,
    webhook_timestamp: int,
    body_sha256: str,
    incoming: Sequence[Incoming],
    destinations: Iterable[str],
    at_once: bool = True,
) -> list[Outcome]:
    """Record every event of one delivery in one transaction (HubSpot and Salesforce send
    up to 100 per request); each is recognised as a duplicate by its own id.

    A concurrent delivery of the same ids can win an insert: then the whole delivery is
    rolled back and recorded again, and the second pass finds those ids as duplicates.
    """
    names = tuple(destinations)
    if at_once:  # False: the caller tried that already
        fast = record_new_at_once(
            session.get_bind(),  # type: ignore[arg-type]  # our sessions are bound to an Engine
            source_name=source_name,
            webhook_timestamp=webhook_timestamp,
            body_sha256=body_sha256,
            incoming=incoming,
            destinations=names,
        )
        if fast is not None:
            return fast
    for attempt in range(2):
        try:
            outcomes = [
                _record_one(session, source_name, webhook_timestamp, body_sha256, item, names)
                for item in incoming
            ]
            session.commit()
            return outcomes
        except IntegrityError:
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


def record_new_at_once(
    engine: Engine,
    *,
    source_name: str,
    webhook_timestamp: int,
    body_sha256: str,
    incoming: Sequence[Incoming],
    destinations: tuple[str, ...],
) -> list[Outcome] | None:
    """PostgreSQL, and only new decisions: one statement each (relay/ledger/record_pg.py). None,
    and nothing written, for anything else: then `record_events` tells what it is."""
    decisions = [(item.delivery_id, item.decision) for item in incoming if item.decision]
    if engine.dialect.name != "postgresql" or len(decisions) != len(incoming):
        return None
    recorded = record_new_decisions(
        engine,
        source_name=source_name,
        webhook_timestamp=webhook_timestamp,
        body_sha256=body_sha256,
        decisions=decisions,
        destinations=destinations,
    )
    if recorded is None:
        return None
    return [
        Outcome(
            delivery_id, "accepted", recorded=Recorded(public_id, contact_id, False, destinations)
        )
        for (delivery_id, _), (public_id, contact_id) in zip(decisions, recorded, strict=True)
    ]


def _record_one(
    session: Session,
    source_name: str,
    webhook_timestamp: int,
    body_sha256: str,
    item: Incoming,
    destinations: tuple[str, ...],
) -> Outcome:
    if item.decision is None:
        reason = item.ignored or "No decision."
        record_ignored(session, source_name, body_sha256, item, reason)
        return Outcome(item.delivery_id, "ignored", reason=reason)
    existing = find_duplicate(session, source_name, item.delivery_id)
    if existing is not None:
        return Outcome(item.delivery_id, "duplicate", recorded=existing)
    event = _insert_event(
        session, source_name, item.delivery_id, webhook_timestamp, body_sha256, item.decision
    )
    session.add_all(
        Outbox(
            event_id=event.id,
            destination=name,
            contact_id=event.contact_id,
            created_at=event.received_at,
        )
        for name in destinations
    )
    session.flush()
    recorded = Recorded(event.public_id, event.contact_id, False, destinations)
    return Outcome(item.delivery_id, "accepted", recorded=recorded)


def _insert_event(
    session: Session,
    source_name: str,
    delivery_id: str,
    webhook_timestamp: int,
    body_sha256: str,
    decision: Decision,
) -> Event:
    now = utcnow()
    contact_id = _contact_id(session, contact_key(decision.email), now)
    salt = new_salt()
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
        # never the webhook timestamp, which is the attempt time
        # (docs/reference/standard-webhooks.md#the-specification).
        occurred_at=decision.occurred_at or now,
        occurred_at_given=decision.occurred_at is not None,
        webhook_timestamp=webhook_timestamp,
        received_at=now,
        subject_salt=salt,
        subject_digest=subject_digest(salt, decision.email),
        **evidence_columns(decision.evidence),
    )
    event.chain_seq, event.chain_hash = advance(
        session, contact_id, content_hash(event_content(event))
    )
    session.add(event)
    session.flush()
    return event


def record_ignored(
    session: Session, source_name: str, body_sha256: str, item: Incoming, reason: str
) -> None:
    """Kept as evidence of what was received and why nothing was recorded; a redelivery of
    the same id is recorded once."""
    insert_ignoring_conflicts(
        session,
        IgnoredEvent,
        [
            {
                "source_name": source_name,
                "delivery_id": item.delivery_id,
                "event_type": item.event_type[:128],
                "reason": reason[:500],
                "body_sha256": body_sha256,
                "received_at": utcnow(),
            }
        ],
    )


def _contact_id(session: Session, key: str, now: dt.datetime) -> int:
    found = session.scalar(select(Contact.id).where(Contact.email_key == key))
    if found is not None:
        return found
    insert_ignoring_conflicts(session, Contact, [{"email_key": key, "created_at": now}])
    return session.execute(select(Contact.id).where(Contact.email_key == key)).scalar_one()
