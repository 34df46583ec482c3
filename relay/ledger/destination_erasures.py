"""An erasure passed on to destinations (GDPR Art. 19): docs/data-protection.md#at-destinations.

The erasure removes the address from the ledger, but a vendor's delete call needs it. So, in
the erasure's own transaction and before the address goes, each destination with
`erase_at_destination` gets a row here holding the address sealed with `[privacy]
destination_erasure_key` (Fernet, as the kept bodies of relay/ledger/kept_bodies.py), never in
clear text at rest. The caller enqueues one task per row after the commit (ids only); the
sweeper publishes what is due as a backstop. The worker (workers/destinations/erasing.py) opens
the seal, calls the vendor and records the outcome here; a settled row (done or failed) loses
its sealed address at once.
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

PENDING, DONE, FAILED = "pending", "done", "failed"


@dataclass(frozen=True)
class Forwarding:
    """Where an erasure is passed on, and the key that seals the address meanwhile."""

    key: str
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class Outgoing:
    """What one vendor call needs, read in one short transaction (no session held over HTTP)."""

    row_id: int
    destination: str
    address: str
    attempts: int
    created_at: dt.datetime


def forwarding(settings: Settings) -> Forwarding | None:
    """None when no destination passes erasures on (the loader demands the key otherwise)."""
    names = tuple(sorted(n for n, d in settings.destinations.items() if d.erase_at_destination))
    key = settings.privacy.destination_erasure_key
    return Forwarding(key, names) if names and key else None


def address_of(session: Session, contact_id: int) -> str:
    """The address the destinations were last written with: the newest decision's, as sent
    (ConsentWrite.email), else the contact's key. Read before the erasure removes it."""
    sent = session.scalar(
        select(Event.email).where(Event.contact_id == contact_id).order_by(Event.id.desc()).limit(1)
    )
    if sent:
        return str(sent)
    return str(session.scalar(select(Contact.email_key).where(Contact.id == contact_id)) or "")


def capture(
    session: Session, forward: Forwarding, erasure: Erasure, address: str, now: dt.datetime
) -> list[tuple[int, str]]:
    """One pending row per destination, the address sealed: (row id, destination). In the
    erasure's transaction (flushed here for the ids); the caller commits."""
    session.flush()  # the erasure's id
    token = seal(forward.key, {"address": address})
    rows = [
        DestinationErasure(
            erasure_id=erasure.id,
            destination=name,
            status=PENDING,
            sealed_address=token,
            attempts=0,
            created_at=now,
        )
        for name in forward.destinations
    ]
    session.add_all(rows)
    session.flush()
    return [(row.id, row.destination) for row in rows]


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
    """The pending row with its address unsealed; None once settled (or never recorded).
    Raises KeptBodyUnreadableError when the key changed since."""
    row = session.get(DestinationErasure, row_id)
    if row is None or row.status != PENDING or row.sealed_address is None:
        return None
    address = str(open_sealed(key, row.sealed_address)["address"])
    return Outgoing(row.id, row.destination, address, row.attempts, row.created_at)


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
    """Record one try: done, failed (both wipe the sealed address), or pending again at
    `retry_at`. The caller commits."""
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "last_status": http_status,
        "detail": detail[:500] if detail else None,
        "next_attempt_at": retry_at,
        "dispatched_at": None,
    }
    if status != PENDING:
        values.update(sealed_address=None, finished_at=now)
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
