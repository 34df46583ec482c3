"""The chain in the ledger: appending a link, reading a contact's links, verifying them, and
recording the last verification (docs/data-protection.md#chain; the pure part is
relay/ledger/chain.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from relay.ledger import audit, chain
from relay.ledger.models import ChainVerification, Contact, Erasure, Event, utcnow

VERIFY_BATCH = 500  # contacts per query when verifying everything


def advance(session: Session, contact_id: int, content_digest: str) -> tuple[int, str]:
    """Append one link to the contact's chain: (its position, its hash). The UPDATE comes first,
    so the contact row is locked (PostgreSQL) or the database is (SQLite) before the head is
    read: two writers for one contact are serialised, never forked."""
    session.execute(
        update(Contact).where(Contact.id == contact_id).values(chain_seq=Contact.chain_seq + 1)
    )
    seq, head = session.execute(
        select(Contact.chain_seq, Contact.chain_head).where(Contact.id == contact_id)
    ).one()
    new = chain.link_hash(head, content_digest)
    session.execute(update(Contact).where(Contact.id == contact_id).values(chain_head=new))
    return int(seq), new


def event_content(event: Event) -> dict[str, Any]:
    return chain.decision_content(
        event_id=event.public_id,
        source_name=event.source_name,
        delivery_id=event.delivery_id,
        payload_sha256=event.body_sha256,
        subject=event.subject_digest or "",
        decision=event.decision,
        source=event.consent_source,
        source_id=event.consent_source_id,
        occurred_at=event.occurred_at,
        occurred_at_given=event.occurred_at_given,
        webhook_timestamp=event.webhook_timestamp,
        received_at=event.received_at,
        evidence=event.evidence.as_json(),
    )


def erasure_content(erasure: Erasure) -> dict[str, Any]:
    return chain.erasure_content(
        erasure_id=erasure.public_id,
        erased_at=erasure.erased_at,
        requested_by=erasure.requested_by,
        reason=erasure.reason,
        decisions=erasure.decisions,
        pseudonymised=erasure.pseudonymised,
    )


def contact_links(session: Session, contact_id: int) -> list[chain.Link]:
    """Every link of the contact as stored, in chain order."""
    links = [
        chain.Link(
            event.chain_seq,
            f"event {event.public_id}",
            event_content(event),
            event.chain_hash,
            salt=event.subject_salt,
            email=event.email if event.subject_salt else None,
        )
        for event in session.scalars(select(Event).where(Event.contact_id == contact_id))
    ]
    links += [
        chain.Link(e.chain_seq, f"erasure {e.public_id}", erasure_content(e), e.chain_hash)
        for e in session.scalars(select(Erasure).where(Erasure.contact_id == contact_id))
    ]
    return sorted(links, key=lambda item: (item.seq is not None, item.seq or 0), reverse=False)


@dataclass
class Verification:
    """What one verification found: counts, and the first break of each broken contact."""

    scope: str
    contacts: int = 0
    links: int = 0
    breaks: dict[int, chain.Break] = field(default_factory=dict)
    finished_at: dt.datetime | None = None
    audit_entries: int = 0  # the audit log's chain, checked when verifying everything
    audit_break: chain.Break | None = None

    @property
    def ok(self) -> bool:
        return not self.breaks and self.audit_break is None

    def as_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "ok": self.ok,
            "contacts": self.contacts,
            "links": self.links,
            "broken": [
                {"contact_id": contact_id, **found.as_json()}
                for contact_id, found in sorted(self.breaks.items())
            ],
            "audit": {
                "entries": self.audit_entries,
                "ok": self.audit_break is None,
                "broken": None if self.audit_break is None else self.audit_break.as_json(),
            },
            "finished_at": chain.timestamp(self.finished_at) if self.finished_at else None,
        }


def verify(session: Session, contact_id: int | None = None) -> Verification:
    """Verify one contact's chain, or every contact's; the outcome is recorded (the metric)."""
    result = Verification("all" if contact_id is None else f"contact {contact_id}")
    ids = [contact_id] if contact_id is not None else None
    for contact in _contacts(session, ids):
        links = contact_links(session, contact.id)
        result.contacts += 1
        result.links += len(links)
        found = chain.verify_links(links, contact.chain_seq, contact.chain_head)
        if found is not None:
            result.breaks[contact.id] = found
    result.breaks.update(_orphans(session, contact_id))
    if contact_id is None:
        result.audit_entries, result.audit_break = audit.verify(session)
    result.finished_at = utcnow()
    _record(session, result)
    return result


def _contacts(session: Session, ids: list[int] | None) -> Iterator[Contact]:
    if ids is not None:
        yield from session.scalars(select(Contact).where(Contact.id.in_(ids)))
        return
    after = 0
    while True:
        batch = list(
            session.scalars(
                select(Contact).where(Contact.id > after).order_by(Contact.id).limit(VERIFY_BATCH)
            )
        )
        if not batch:
            return
        yield from batch
        after = batch[-1].id
        session.expunge_all()  # a large ledger is verified in constant memory


def _orphans(session: Session, contact_id: int | None) -> dict[int, chain.Break]:
    """Events of a contact that has no row (a contact deleted with its head) cannot be
    verified against a head: each is a break."""
    query = (
        select(Event.contact_id, func.min(Event.public_id))
        .outerjoin(Contact, Contact.id == Event.contact_id)
        .where(Contact.id.is_(None))
        .group_by(Event.contact_id)
    )
    if contact_id is not None:
        query = query.where(Event.contact_id == contact_id)
    return {
        owner: chain.Break(None, f"event {public_id}", "its contact and chain head are gone")
        for owner, public_id in session.execute(query)
    }


def _record(session: Session, result: Verification) -> None:
    first = next(iter(sorted(result.breaks.items())), None)
    found = None if first is None else f"contact {first[0]}: {first[1].reason}"
    if result.audit_break is not None:  # the audit log counts as one more broken chain
        found = found or f"audit log: {result.audit_break.reason}"
    session.add(
        ChainVerification(
            finished_at=result.finished_at,
            scope=result.scope,
            contacts=result.contacts,
            links=result.links,
            broken=len(result.breaks) + (result.audit_break is not None),
            first_break=found,
        )
    )
    session.commit()


def last_verification(session: Session) -> ChainVerification | None:
    return session.scalars(
        select(ChainVerification).order_by(ChainVerification.id.desc()).limit(1)
    ).first()
