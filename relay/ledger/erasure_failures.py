"""An erasure that a destination's delete call could not settle (`failed`,
relay/ledger/destination_erasures.py), and what an operator does about it
(docs/data-protection.md#at-destinations).

Art. 19 asks the controller to pass an erasure on, and Art. 5(1)(e) not to keep personal data
longer than needed. So a failed row keeps its sealed identifier (encrypted at rest) until an
operator decides: **retry** puts it back to pending, with a fresh round of tries (its
`created_at` becomes the start of that round, as max_retry_age_seconds counts from it), and
the worker calls the vendor again; **acknowledge** records that the operator takes it over
(erased by hand at the vendor, or not to be erased there) and wipes the seal for good. Either
is an entry of the operator audit log, in the same transaction.

An operator who does neither is not left holding the seal for ever: `[retention]
failed_destination_erasures_days` after it failed, the prune task acknowledges it
(`expire_sealed`), audited as the system actor `RETENTION` (relay/ledger/retention.py).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.errors import ProblemError
from relay.ledger import audit
from relay.ledger.destination_erasures import ACKNOWLEDGED, FAILED, PENDING
from relay.ledger.models import DestinationErasure, Erasure, utcnow

# The prune task, acting on its own: in the audit log as actor_kind `system`, channel `beat`.
RETENTION = audit.Actor("system", "retention", "beat")


class UnknownDestinationErasureError(ProblemError):
    http_status = 404
    slug = "unknown-destination-erasure"
    title = "No such erasure at this destination"


class NotFailedError(ProblemError):
    http_status = 409
    slug = "destination-erasure-not-failed"
    title = "This erasure at the destination has not failed"


class NothingToRetryError(ProblemError):
    http_status = 409
    slug = "destination-erasure-unsealed"
    title = "The identifier is gone: this erasure cannot be retried"


def _failed_row(session: Session, erasure_id: str, destination: str) -> DestinationErasure:
    row = session.scalar(
        select(DestinationErasure)
        .join(Erasure, Erasure.id == DestinationErasure.erasure_id)
        .where(Erasure.public_id == erasure_id, DestinationErasure.destination == destination)
        .with_for_update()
    )
    if row is None:
        raise UnknownDestinationErasureError(f"Erasure {erasure_id} has no row for {destination}.")
    if row.status != FAILED:
        raise NotFailedError(f"It is {row.status}; only a failed one can be handled.")
    return row


def retry(
    session: Session,
    erasure_id: str,
    destination: str,
    actor: audit.Actor,
    now: dt.datetime | None = None,
) -> int:
    """Back to pending, due at once; the row id, for the caller to enqueue after the commit.
    Refused when the seal is gone (acknowledged, or never made: a template the last decision
    could not fill)."""
    now = now or utcnow()
    row = _failed_row(session, erasure_id, destination)
    if row.sealed_address is None:
        session.rollback()
        raise NothingToRetryError("Nothing is sealed for it: acknowledge it instead.")
    row.status, row.created_at, row.finished_at = PENDING, now, None
    row.next_attempt_at, row.dispatched_at = None, None
    targets = [f"erasure {erasure_id}", f"destination {destination}"]
    audit.record(session, actor, "erasure-retry", targets, f"pending again: {row.detail}", now=now)
    session.commit()
    return row.id


def acknowledge(
    session: Session,
    erasure_id: str,
    destination: str,
    actor: audit.Actor,
    note: str,
    now: dt.datetime | None = None,
) -> None:
    """The operator takes the failure over: `acknowledged`, the seal wiped."""
    now = now or utcnow()
    row = _failed_row(session, erasure_id, destination)
    row.status, row.sealed_address = ACKNOWLEDGED, None
    targets = [f"erasure {erasure_id}", f"destination {destination}"]
    audit.record(session, actor, "erasure-acknowledge", targets, f"acknowledged: {note}", now=now)
    session.commit()


def expire_sealed(
    session: Session, cutoff: dt.datetime, limit: int, note: str, now: dt.datetime
) -> int:
    """Acknowledge up to `limit` failed rows that still hold a seal and failed before
    `cutoff`, one audit entry each (actor RETENTION); answers how many. The caller commits."""
    acknowledged = 0
    for row_id, destination, erasure_id in _expired(session, cutoff, limit):
        wiped = session.execute(
            update(DestinationErasure)
            .where(DestinationErasure.id == row_id, DestinationErasure.status == FAILED)
            .values(status=ACKNOWLEDGED, sealed_address=None)
            .execution_options(synchronize_session=False)
        )
        if getattr(wiped, "rowcount", 0):  # an operator's retry in between wins
            acknowledged += 1
            targets = [f"erasure {erasure_id}", f"destination {destination}"]
            outcome = f"acknowledged: {note}"
            audit.record(session, RETENTION, "erasure-acknowledge", targets, outcome, now=now)
    return acknowledged


def _expired(session: Session, cutoff: dt.datetime, limit: int) -> list[tuple[int, str, str]]:
    """(row id, destination, erasure id) of failed rows past `cutoff` still sealed. A failed
    row without a seal holds nothing personal: it stays failed for an operator to see."""
    found = session.execute(
        select(DestinationErasure.id, DestinationErasure.destination, Erasure.public_id)
        .join(Erasure, Erasure.id == DestinationErasure.erasure_id)
        .where(
            DestinationErasure.status == FAILED,
            DestinationErasure.sealed_address.is_not(None),
            DestinationErasure.finished_at < cutoff,
        )
        .order_by(DestinationErasure.id)
        .limit(limit)
    )
    return [(int(i), str(d), str(e)) for i, d, e in found]
