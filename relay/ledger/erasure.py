"""Erasing one person (GDPR Art. 17) while keeping the proof (Art. 17(3)(e)):
docs/data-protection.md#erasure.

What goes: the address (the contact's key, every decision's address as sent), each decision's
subject salt (so its subject digest links to no one any more), and the address wherever free
text of the ledger holds it (an attempt's detail, a dead letter's detail and response excerpt,
the last error). What stays: each decision's kind, time, source and evidence, and its chain
link. The erasure itself is a link of the contact's chain and a row (who, when, why), so the
chain verifies across it (relay/ledger/chain.py accepts a decision without its salt only when
an erasure follows it).

Nothing is sent for the person after the erasure: it takes every delivery lease of the contact
first (waiting out a write in flight, never overlapping one), settles pending work as `erased`,
and a worker that takes a lease afterwards finds the contact erased and writes nothing
(workers/delivery/contact.py). When `[privacy] pseudonym_key` is set, the contact keeps an
HMAC of its address: a later decision from the same address makes a new contact, which only
the key's holder can link to the erased one (`linked_erasures`).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.orm import Session

from relay.errors import ProblemError
from relay.ledger import audit, chain, chain_store, destination_erasures
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import (
    Contact,
    DeadLetter,
    DeliveryState,
    Erasure,
    Event,
    Outbox,
    Verification,
    utcnow,
)
from relay.ledger.redaction import REDACTED, redactor, scrub_free_text
from schemas.consent import contact_key

__all__ = ["REDACTED", "redactor"]  # re-exported: the redaction lives in relay/ledger/redaction.py
ERASED = "erased"  # the outbox and dead-letter status of work settled by an erasure
LEASE_TRIES = 20  # x LEASE_WAIT: how long an erasure waits for a write in flight to finish
LEASE_WAIT = 0.25


class AlreadyErasedError(ProblemError):
    http_status = 409
    slug = "already-erased"
    title = "Contact already erased"


class ErasureBusyError(ProblemError):
    """A delivery to the contact is in flight: the erasure does not overlap it."""

    http_status = 409
    slug = "delivery-in-flight"
    title = "A delivery for this contact is in flight"


@dataclass(frozen=True)
class ErasureRequest:
    contact_id: int
    requested_by: str
    reason: str


@dataclass(frozen=True)
class ErasureResult:
    erasure_id: str
    contact_id: int
    erased_at: dt.datetime
    decisions: int
    pseudonymised: bool
    settled_deliveries: int
    chain_seq: int
    chain_hash: str
    # (row id, destination) of each destination the erasure is passed on to: enqueue after commit
    forwarded: tuple[tuple[int, str], ...] = ()
    # every destination row (pending, or failed at capture), as the export shows it
    passed_on: tuple[dict[str, Any], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "erasure_id": self.erasure_id,
            "contact_id": self.contact_id,
            "erased_at": chain.timestamp(self.erased_at),
            "decisions": self.decisions,
            "pseudonymised": self.pseudonymised,
            "settled_deliveries": self.settled_deliveries,
            "chain_seq": self.chain_seq,
            "chain_hash": self.chain_hash,
            "destinations": list(self.passed_on),
        }


def erase_contact(
    session: Session,
    request: ErasureRequest,
    *,
    pseudonym_key: str | None,
    lease_seconds: float,
    clock: Callable[[], dt.datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    actor: audit.Actor | None = None,
    forward: destination_erasures.Forwarding | None = None,
) -> ErasureResult | None:
    """Erase the contact; None when there is no such contact. With `forward`, the erasure is
    also recorded for each destination's delete call (relay/ledger/destination_erasures.py)."""
    contact = session.get(Contact, request.contact_id)
    if contact is None:
        session.rollback()
        return None
    if contact.erased_at is not None:
        session.rollback()
        raise AlreadyErasedError(f"Contact {request.contact_id} was erased already.")
    public_id = str(uuid.uuid4())
    owner = f"erasure:{public_id}"[:64]
    for attempt in range(LEASE_TRIES):
        if _take_leases(session, request.contact_id, owner, clock(), lease_seconds):
            break
        if attempt + 1 < LEASE_TRIES:
            sleep(LEASE_WAIT)
    else:
        raise ErasureBusyError(
            "A delivery for this contact is being written; nothing was erased. Try again.",
            headers={"Retry-After": "5"},
        )
    try:
        return _erase(session, request, public_id, pseudonym_key, clock(), actor, forward)
    finally:
        _release_leases(session, request.contact_id, owner)


def _take_leases(
    session: Session, contact_id: int, owner: str, now: dt.datetime, lease_seconds: float
) -> bool:
    """Every delivery lease of the contact, or none (a worker holds one: it is writing)."""
    owed = session.scalars(
        select(Outbox.destination).where(Outbox.contact_id == contact_id).distinct()
    )
    rows = [{"destination": name, "contact_id": contact_id} for name in owed]
    insert_ignoring_conflicts(session, DeliveryState, rows)
    total = session.scalar(
        select(func.count())
        .select_from(DeliveryState)
        .where(DeliveryState.contact_id == contact_id)
    )
    taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(DeliveryState)
        .where(
            DeliveryState.contact_id == contact_id,
            or_(DeliveryState.lease_owner.is_(None), DeliveryState.lease_expires_at < now),
        )
        .values(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
    )
    if taken.rowcount != total:
        session.rollback()
        return False
    session.commit()
    return True


def _release_leases(session: Session, contact_id: int, owner: str) -> None:
    session.rollback()
    session.execute(
        update(DeliveryState)
        .where(DeliveryState.contact_id == contact_id, DeliveryState.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None, dispatched_at=None)
    )
    session.commit()


def _erase(
    session: Session,
    request: ErasureRequest,
    public_id: str,
    key: str | None,
    now: dt.datetime,
    actor: audit.Actor | None = None,
    forward: destination_erasures.Forwarding | None = None,
) -> ErasureResult:
    cid = request.contact_id
    # The guard and the lock in one statement: of two erasures, one finds erased_at set.
    marked: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Contact).where(Contact.id == cid, Contact.erased_at.is_(None)).values(erased_at=now)
    )
    if marked.rowcount != 1:
        session.rollback()
        raise AlreadyErasedError(f"Contact {cid} was erased already.")
    contact = session.get(Contact, cid, populate_existing=True)
    assert contact is not None  # the UPDATE above found it
    values = destination_erasures.decision_values(session, cid) if forward else {}
    sent = set(session.scalars(select(Event.email).where(Event.contact_id == cid).distinct()))
    addresses = {contact.email_key, *sent} - {""}
    pseudonym = chain.pseudonym(key, contact.email_key) if key else None
    contact.email_key = f"{ERASED}:{public_id}"
    contact.pseudonym = pseudonym
    decisions = session.execute(
        update(Event).where(Event.contact_id == cid).values(email="", subject_salt=None)
    )
    scrub_free_text(session, cid, addresses)
    settled = _settle(session, cid, now)
    erasure = Erasure(
        public_id=public_id,
        contact_id=cid,
        erased_at=now,
        requested_by=request.requested_by,
        reason=request.reason,
        decisions=int(getattr(decisions, "rowcount", 0)),
        pseudonymised=pseudonym is not None,
        settled_deliveries=settled,
    )
    seq, link = chain_store.advance(
        session, cid, chain.content_hash(chain_store.erasure_content(erasure))
    )
    erasure.chain_seq, erasure.chain_hash = seq, link
    session.add(erasure)
    rows = destination_erasures.capture(session, forward, erasure, values, now) if forward else []
    if actor is not None:  # in the erasure's transaction: neither is committed without the other
        outcome = f"erased: {erasure.decisions} decision(s), {settled} delivery(ies) settled"
        audit.record(
            session, actor, "erasure", [f"contact {cid}", f"erasure {public_id}"], outcome, now=now
        )
    session.commit()
    return ErasureResult(
        public_id,
        cid,
        now,
        erasure.decisions,
        erasure.pseudonymised,
        settled,
        seq,
        link,
        destination_erasures.pending_pairs(rows),
        tuple(destination_erasures.as_json(row) for row in rows),
    )


def _settle(session: Session, contact_id: int, now: dt.datetime) -> int:
    """Pending work becomes `erased` (never sent); open dead letters too (never replayed);
    read-back state goes (nothing is read for the person again)."""
    pending = session.execute(
        update(Outbox)
        .where(Outbox.contact_id == contact_id, Outbox.status == "pending")
        .values(status=ERASED, settled_at=now)
    )
    session.execute(
        update(DeadLetter)
        .where(DeadLetter.contact_id == contact_id, DeadLetter.status == "open")
        .values(status=ERASED, resolved_at=now)
    )
    session.execute(delete(Verification).where(Verification.contact_id == contact_id))
    return int(getattr(pending, "rowcount", 0))


def linked_erasures(session: Session, pseudonym_key: str | None, email: str) -> list[int]:
    """The erased contacts of this address: only with the key that pseudonymised them."""
    key = contact_key(email)
    if not pseudonym_key or not key:
        return []
    found = select(Contact.id).where(Contact.pseudonym == chain.pseudonym(pseudonym_key, key))
    return list(session.scalars(found.order_by(Contact.id)))


def is_erased(session: Session, contact_id: int) -> bool:
    erased = session.scalar(select(Contact.erased_at).where(Contact.id == contact_id))
    return erased is not None


def settle_erased(session: Session, destination: str, contact_id: int, now: dt.datetime) -> int:
    """Pending rows of an erased contact (none, unless written around the erasure) settle as
    `erased`: a delivery task still queued for the person ends here."""
    settled = session.execute(
        update(Outbox)
        .where(
            Outbox.destination == destination,
            Outbox.contact_id == contact_id,
            Outbox.status == "pending",
        )
        .values(status=ERASED, settled_at=now)
    )
    return int(getattr(settled, "rowcount", 0))
