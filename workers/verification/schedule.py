"""Which delivered decisions to read back now, run by beat's sweep (workers/tasks.py).

A decision is read back `after_write_seconds` after it was written (Engage stores writes
asynchronously, docs/reference/engage.md#endpoints: an immediate read could miss it), and then
every `interval_seconds`; a failed read again after `after_write_seconds`. Each sweep enqueues
at most a destination's budget (what its share of the rate limit reads until the next sweep),
the longest unread first, into the verification queue of its own (relay/messaging/lanes.py),
so that no read-back ever stands in a lane in front of a decision.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from relay.ledger import pauses
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import Contact, DeliveryState, Verification
from workers.verification.context import VerificationContext

PublishReads = Callable[[str, list[int]], None]  # destination, contact ids


def schedule_verifications(ctx: VerificationContext, publish: PublishReads) -> int:
    """Enqueue the due read-backs of every verifiable destination; return how many."""
    if not ctx.settings.enabled or not ctx.readers:
        return 0
    now = ctx.clock()
    with ctx.sessions() as session:
        active = sorted(set(ctx.readers) - pauses.paused_names(session))
        due = {name: due_reads(session, ctx, name, now) for name in active}
        _mark_dispatched(session, [(d, c) for d, ids in due.items() for c in ids], now)
        session.commit()  # record the dispatch before publishing
    for destination, contact_ids in due.items():
        if contact_ids:
            publish(destination, contact_ids)
    return sum(len(ids) for ids in due.values())


def due_reads(
    session: Session, ctx: VerificationContext, destination: str, now: dt.datetime
) -> list[int]:
    settings = ctx.settings
    written_before = now - dt.timedelta(seconds=settings.after_write_seconds)
    stale = now - dt.timedelta(seconds=settings.interval_seconds)
    redispatch = now - dt.timedelta(seconds=ctx.redispatch_after_seconds)
    check = Verification.checked_at
    query = (
        select(DeliveryState.contact_id)
        .join(Contact, Contact.id == DeliveryState.contact_id)
        .outerjoin(
            Verification,
            and_(
                Verification.destination == DeliveryState.destination,
                Verification.contact_id == DeliveryState.contact_id,
            ),
        )
        .where(
            DeliveryState.destination == destination,
            DeliveryState.delivered_event_id.is_not(None),
            DeliveryState.delivered_at <= written_before,
            DeliveryState.lease_owner.is_(None),
            Contact.erased_at.is_(None),  # an erased person is never read back
            or_(Verification.dispatched_at.is_(None), Verification.dispatched_at <= redispatch),
            or_(
                check.is_(None),
                check < DeliveryState.delivered_at,  # written again since the last read
                check <= stale,
                and_(Verification.status == "error", check <= written_before),
            ),
        )
        # Longest unread first: a contact last read long ago before one written a moment
        # ago, so a steady stream of new writes cannot starve the periodic read-backs.
        .order_by(func.coalesce(check, DeliveryState.delivered_at), DeliveryState.contact_id)
        .limit(ctx.budgets.get(destination, 1))
    )
    return list(session.scalars(query))


def _mark_dispatched(session: Session, keys: list[tuple[str, int]], now: dt.datetime) -> None:
    if not keys:
        return
    rows = [{"destination": d, "contact_id": c, "drifts": 0} for d, c in keys]
    insert_ignoring_conflicts(session, Verification, rows)
    session.execute(
        update(Verification)
        .where(tuple_(Verification.destination, Verification.contact_id).in_(keys))
        .values(dispatched_at=now)
        .execution_options(synchronize_session=False)
    )
