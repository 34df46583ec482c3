"""A contact's delivery lease (one writer per contact and destination at a time), and the
cheap look that spares a task the lease when the contact owes nothing."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import DeliveryState, Outbox

if TYPE_CHECKING:
    from workers.delivery.contact import DeliveryContext, Job


def owes_anything(session: Session, job: Job) -> bool:
    """Whether the contact has a pending outbox row at the destination. Each decision's
    intake publishes a task, so a contact with five decisions in the queue gets five tasks;
    the first delivers the latest decision and settles every row. The other four used to take
    and release the lease (three commits each) only to find nothing to do: behind a large
    backlog most of the queue was such tasks, and the contacts still owed waited behind them
    (docs/benchmark.md). One indexed read (ix_outbox_pending) now sends them away. A
    decision recorded just after this read publishes its own task after its commit."""
    pending = select(Outbox.id).where(
        Outbox.status == "pending",
        Outbox.destination == job.destination,
        Outbox.contact_id == job.contact_id,
    )
    return session.scalar(pending.limit(1)) is not None


def acquire_lease(session: Session, ctx: DeliveryContext, job: Job) -> bool:
    """Take the contact's lease row: works the same on SQLite and PostgreSQL."""
    now = ctx.clock()
    insert_ignoring_conflicts(
        session, DeliveryState, [{"destination": job.destination, "contact_id": job.contact_id}]
    )
    taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(DeliveryState)
        .where(
            job.state_key,
            or_(DeliveryState.lease_owner.is_(None), DeliveryState.lease_expires_at < now),
        )
        .values(
            lease_owner=job.owner,
            lease_expires_at=now + dt.timedelta(seconds=ctx.settings.lease_seconds),
        )
    )
    session.commit()
    return taken.rowcount == 1


def release_lease(session: Session, job: Job, keep_dispatched: bool = False) -> None:
    """Let go of the lease; the sweeper may send the contact again once it is due, unless
    (`keep_dispatched`) the contact's own message is already on its way back."""
    session.rollback()
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if not keep_dispatched:
        values["dispatched_at"] = None
    session.execute(
        update(DeliveryState)
        .where(job.state_key, DeliveryState.lease_owner == job.owner)
        .values(**values)
    )
    session.commit()
