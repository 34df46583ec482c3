"""Read a delivered decision back from its destination and compare (docs/delivery/verification.md).

The destination may not hold what we wrote: an import, an edit in its UI or another
integration can overwrite `tracking_consent` after us. A read-back that differs from the
contact's latest decision is drift: counted, logged (ids and consent values, never the
address), recorded on the contact's verification row and, under the destination's `repair`
policy, repaired by handing the latest decision back to the normal delivery path (its outbox
row pending again, a delivery task published): the same lease, rate limit, retries and
ledger trail as any write.

A contact whose delivery is under way (its lease is held, or a newer decision is not yet
delivered) is skipped: the delivery settles it, and the next sweep reads it back after.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from relay.domain import ConsentWrite
from relay.ledger import erasure, notifications
from relay.ledger.models import DeliveryState, Outbox, Verification
from relay.messaging.lanes import is_urgent
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from schemas.notifications import DRIFT_FOUND
from workers.delivery.contact import as_write, latest_event
from workers.destinations.errors import DeliveryError
from workers.destinations.reading import Reading
from workers.ratelimit.pace import ThrottledError
from workers.verification.context import VerificationContext

log = get_logger(__name__)
PublishRepair = Callable[[str, int, bool], None]  # destination, contact id, urgent


@dataclass(frozen=True)
class Target:
    destination: str
    contact_id: int
    event_id: int
    write: ConsentWrite

    @property
    def decision(self) -> str:
        return self.write.tracking_consent


def verify_contacts(
    ctx: VerificationContext, destination: str, contact_ids: list[int], repair: PublishRepair
) -> dict[str, int]:
    """Read each contact back; return the outcomes counted (verified, drift, error,
    unverifiable, skipped, throttled)."""
    outcomes: Counter[str] = Counter()
    for position, contact_id in enumerate(contact_ids):
        try:
            outcome = verify_one(ctx, destination, contact_id, repair)
        except ThrottledError:
            # The share is spent: the rest wait for a later sweep (nothing was reserved).
            _release(ctx, destination, contact_ids[position:])
            outcomes["throttled"] += len(contact_ids) - position
            break
        outcomes[outcome] += 1
    return dict(outcomes)


def verify_one(
    ctx: VerificationContext, destination: str, contact_id: int, repair: PublishRepair
) -> str:
    with ctx.sessions() as session:
        target = _target(session, destination, contact_id)
        session.rollback()  # never hold a transaction across an HTTP call
    if target is None:
        return "skipped"
    try:
        reading = ctx.readers[destination].read(target.write)
    except DeliveryError as exc:
        metrics.count_verification(destination, "error")
        _record(ctx, target, "error", None)
        log.warning("read-back failed", outcome=exc.outcome, status=exc.status, **_ids(target))
        return "error"
    if reading is None:
        metrics.count_verification(destination, "unverifiable")
        return _record(ctx, target, "unverifiable", None)
    if reading.matches:
        metrics.count_verification(destination, "verified")
        return _record(ctx, target, "verified", reading)
    return _drift(ctx, target, reading, repair)


def _target(session: Session, destination: str, contact_id: int) -> Target | None:
    """The decision the destination should hold, if it is settled there and nobody is
    writing: else None (skip)."""
    latest = latest_event(session, destination, contact_id)
    state = session.get(DeliveryState, (destination, contact_id))
    if latest is None or state is None or state.lease_owner is not None:
        return None
    if erasure.is_erased(session, contact_id):  # nothing is read for an erased person
        return None
    if state.delivered_event_id != latest.id:
        return None
    return Target(destination, contact_id, latest.id, as_write(latest))


def _drift(
    ctx: VerificationContext, target: Target, reading: Reading, repair: PublishRepair
) -> str:
    policy = ctx.policies.get(target.destination, "repair")
    with ctx.sessions() as session:
        if _target(session, target.destination, target.contact_id) != target:
            session.rollback()  # a newer decision or a write came in meanwhile
            return "skipped"
        _store(session, ctx, target, "drift", reading)
        reopened = policy == "repair" and _reopen(session, ctx, target)
        action = "repaired" if reopened else "reported"
        _announce(session, ctx, target, reading, action)
        session.commit()
    metrics.count_verification(target.destination, "drift")
    metrics.count_drift(target.destination, action)
    log.warning(
        "drift found", seen=reading.seen, expected=reading.expected, action=action, **_ids(target)
    )
    if reopened:
        repair(target.destination, target.contact_id, is_urgent(target.decision))
    return "drift"


def _announce(
    session: Session, ctx: VerificationContext, target: Target, reading: Reading, action: str
) -> None:
    data: notifications.Data = {
        "seen": reading.seen,
        "expected": reading.expected,
        "action": action,
        "event_id": target.event_id,
    }
    notifications.record(
        session, DRIFT_FOUND, target.destination, data, ctx.clock(), target.contact_id
    )


def _reopen(session: Session, ctx: VerificationContext, target: Target) -> bool:
    """Hand the latest decision back to delivery: the destination no longer holds it, its
    outbox row is pending again (so the sweeper delivers it even if our message is lost)."""
    key = (DeliveryState.destination == target.destination) & (
        DeliveryState.contact_id == target.contact_id
    )
    moved = session.execute(
        update(DeliveryState)
        .where(key, DeliveryState.delivered_event_id == target.event_id)
        .where(DeliveryState.lease_owner.is_(None))
        .values(delivered_event_id=None, next_attempt_at=None, dispatched_at=ctx.clock())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(
        update(Outbox)
        .where(Outbox.destination == target.destination, Outbox.event_id == target.event_id)
        .values(status="pending", settled_at=None, settled_by_event_id=None)
        .execution_options(synchronize_session=False)
    )
    return True


def _record(ctx: VerificationContext, target: Target, status: str, reading: Reading | None) -> str:
    with ctx.sessions() as session:
        _store(session, ctx, target, status, reading)
        session.commit()
    return status


def _store(
    session: Session, ctx: VerificationContext, target: Target, status: str, reading: Reading | None
) -> None:
    now = ctx.clock()
    row = session.get(Verification, (target.destination, target.contact_id))
    if row is None:
        row = Verification(destination=target.destination, contact_id=target.contact_id, drifts=0)
        session.add(row)
    row.event_id, row.status, row.checked_at, row.dispatched_at = target.event_id, status, now, None
    row.seen = reading.seen if reading is not None else None
    if status == "verified":
        row.verified_at = now
    if status == "drift" and reading is not None:
        row.drifts = (row.drifts or 0) + 1
        row.last_drift_at, row.last_drift_seen = now, reading.seen


def _release(ctx: VerificationContext, destination: str, contact_ids: list[int]) -> None:
    with ctx.sessions() as session:
        session.execute(
            update(Verification)
            .where(Verification.destination == destination)
            .where(Verification.contact_id.in_(contact_ids))
            .values(dispatched_at=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()


def _ids(target: Target) -> dict[str, object]:
    return {"destination": target.destination, "contact_id": target.contact_id}
