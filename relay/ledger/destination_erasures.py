"""An erasure passed on to destinations (GDPR Art. 19): docs/data-protection.md#at-destinations.

The erasure removes the address from the ledger, but a vendor's delete call needs the person's
identifier there: Engage the address, MoEngage the customer_id the relay renders from its
template over a decision (schemas/destinations.py `erasure_template`). So, in the erasure's own
transaction and before the address goes, each destination with `erase_at_destination` gets a
row here holding that identifier, rendered over the newest decision, sealed with `[privacy]
destination_erasure_key` (Fernet, as the kept bodies of relay/ledger/kept_bodies.py), never in
clear text at rest (the column keeps its first name, `sealed_address`). The caller enqueues one
task per row after the commit (ids only); the sweeper publishes what is due as a backstop. The
worker (workers/erasure/forward.py) opens the seal, calls the vendor and records the outcome
here. A `done` row loses the seal at once; a `failed` one keeps it until an operator retries
(back to pending) or acknowledges the failure (the seal is wiped): relay/ledger/
erasure_failures.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from relay.config.settings import Settings
from relay.ledger.kept_bodies import open_sealed, seal
from relay.ledger.models import Contact, DestinationErasure, Erasure, Event
from schemas.destinations import erasure_template, render_decision_template

PENDING, DONE, FAILED = "pending", "done", "failed"
ACKNOWLEDGED = "acknowledged"  # failed, and an operator took it over: the seal is wiped


@dataclass(frozen=True)
class Forwarding:
    """Where an erasure is passed on (destination, identifier template), and the key that
    seals the identifiers meanwhile."""

    key: str
    targets: tuple[tuple[str, str], ...]

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.targets)


@dataclass(frozen=True)
class Outgoing:
    """What one vendor call needs, read in one short transaction (no session held over HTTP)."""

    row_id: int
    destination: str
    identifier: str  # the address (Engage) or the customer_id (MoEngage)
    attempts: int
    created_at: dt.datetime


def forwarding(settings: Settings) -> Forwarding | None:
    """None when no destination passes erasures on (the loader demands the key otherwise)."""
    targets = tuple(
        (name, erasure_template(d.kind, d.options))
        for name, d in sorted(settings.destinations.items())
        if d.erase_at_destination
    )
    key = settings.privacy.destination_erasure_key
    return Forwarding(key, targets) if targets and key else None


def decision_values(session: Session, contact_id: int) -> dict[str, str | None]:
    """What the destinations were last written with: the newest decision's address as sent
    (ConsentWrite.email, else the contact's key), source and source id, as
    workers/delivery/contact.py `as_write` hands them over. Read before the erasure."""
    newest = session.execute(
        select(Event.email, Event.consent_source, Event.consent_source_id)
        .where(Event.contact_id == contact_id)
        .order_by(Event.id.desc())
        .limit(1)
    ).first()
    email, source, source_id = newest if newest is not None else ("", None, None)
    if not email:
        key = session.scalar(select(Contact.email_key).where(Contact.id == contact_id))
        email = str(key or "")
    return {"email": email, "source": source, "source_id": source_id}


def capture(
    session: Session,
    forward: Forwarding,
    erasure: Erasure,
    values: dict[str, str | None],
    now: dt.datetime,
) -> list[DestinationErasure]:
    """One pending row per destination, its identifier sealed; every row, for the erasure's
    answer (`pending_pairs`: what to enqueue). A template naming what the newest decision
    lacks makes a `failed` row at once (its writes were dead-lettered as misconfigured too).
    In the erasure's transaction (flushed here for the ids); the caller commits."""
    session.flush()  # the erasure's id
    rows = [
        _row(forward.key, erasure.id, name, template, values, now)
        for name, template in forward.targets
    ]
    session.add_all(rows)
    session.flush()
    return rows


def pending_pairs(rows: Iterable[DestinationErasure]) -> tuple[tuple[int, str], ...]:
    """(row id, destination) of each pending row: one task each, enqueued after the commit."""
    return tuple((row.id, row.destination) for row in rows if row.status == PENDING)


def _row(
    key: str,
    erasure_id: int,
    name: str,
    template: str,
    values: dict[str, str | None],
    now: dt.datetime,
) -> DestinationErasure:
    row = DestinationErasure(
        erasure_id=erasure_id, destination=name, status=PENDING, attempts=0, created_at=now
    )
    try:
        row.sealed_address = seal(key, {"identifier": render_decision_template(template, values)})
    except KeyError as exc:
        row.status, row.finished_at = FAILED, now
        row.detail = f"the identifier template needs {exc.args[0]}, absent in the last decision"
    return row


def due(session: Session, now: dt.datetime, redispatch_after: dt.timedelta) -> list[int]:
    """Pending rows whose time has come that no task holds (or whose task was lost); marked
    dispatched. The caller commits."""
    ids = list(
        session.scalars(
            select(DestinationErasure.id).where(
                DestinationErasure.status == PENDING,
                or_(
                    DestinationErasure.next_attempt_at.is_(None),
                    DestinationErasure.next_attempt_at <= now,
                ),
                or_(
                    DestinationErasure.dispatched_at.is_(None),
                    DestinationErasure.dispatched_at <= now - redispatch_after,
                ),
            )
        )
    )
    if ids:
        session.execute(
            update(DestinationErasure)
            .where(DestinationErasure.id.in_(ids))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


def outgoing(session: Session, row_id: int, key: str) -> Outgoing | None:
    """The pending row with its identifier unsealed; None once settled (or never recorded).
    Raises KeptBodyUnreadableError when the key changed since."""
    row = session.get(DestinationErasure, row_id)
    if row is None or row.status != PENDING or row.sealed_address is None:
        return None
    sealed = open_sealed(key, row.sealed_address)
    # rows sealed before MoEngage was supported hold {"address": ...}
    identifier = str(sealed.get("identifier", sealed.get("address", "")))
    return Outgoing(row.id, row.destination, identifier, row.attempts, row.created_at)


def settle(
    session: Session,
    row_id: int,
    *,
    status: str,
    attempts: int,
    http_status: int | None,
    detail: str | None,
    now: dt.datetime,
    retry_at: dt.datetime | None = None,
) -> None:
    """Record one try: done (the seal is wiped), failed (the seal is kept for an operator's
    retry until acknowledged), or pending again at `retry_at`. The caller commits."""
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "last_status": http_status,
        "detail": detail[:500] if detail else None,
        "next_attempt_at": retry_at,
        "dispatched_at": None,
    }
    if status != PENDING:
        values["finished_at"] = now
    if status == DONE:
        values["sealed_address"] = None
    session.execute(
        update(DestinationErasure)
        .where(DestinationErasure.id == row_id, DestinationErasure.status == PENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def statuses(session: Session, erasure_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Per erasure (its row id), each destination's state, for the admin API and the ops page."""
    ids = list(erasure_ids)
    found: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return found
    rows = session.scalars(
        select(DestinationErasure)
        .where(DestinationErasure.erasure_id.in_(ids))
        .order_by(DestinationErasure.destination)
    )
    for row in rows:
        found[row.erasure_id].append(as_json(row))
    return found


def as_json(row: DestinationErasure) -> dict[str, Any]:
    return {
        "destination": row.destination,
        "status": row.status,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "detail": row.detail,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }
