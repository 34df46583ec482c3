"""Batch delivery, for destinations whose API takes many contacts in one call (Acoustic
Connect's `updateContacts` takes an array of inputs: docs/reference/acoustic.md#operations).

The sweeper hands a backlog of a batching destination's due contacts to one task, ids only.
The task takes each contact's lease (a contact whose lease is held is skipped: its holder
delivers it), picks each one's latest decision exactly as `deliver_contact` does (the last
decision wins; up-to-date, dead-lettered and backing-off contacts are settled or left), sends
one call for the rest, and records every contact's outcome on its own, through the same
policy, dead letters and pauses as a single write. A contact that failed before is not
batched (`batchable`): the sweeper sends it alone, so one bad contact cannot hold others back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.orm import Session

from relay.domain import ConsentWrite
from relay.ledger import pauses as destinations
from relay.ledger.models import DeliveryState, Event
from relay.telemetry.logs import get_logger
from workers.delivery.contact import (
    DeliveryContext,
    Job,
    acquire_lease,
    as_write,
    latest_event,
    prepare_write,
    record_failure,
    record_throttled,
    record_written,
    release_lease,
)
from workers.destinations.errors import DeliveryError
from workers.destinations.toolkit import Written
from workers.ratelimit.pace import ThrottledError, one_write

log = get_logger(__name__)


class BatchWriter(Protocol):
    batch_size: int

    def write_many(self, writes: Sequence[ConsentWrite]) -> list[int | Written | DeliveryError]:
        """One outcome per write, in order; raises only what applies to the whole call."""
        ...


def batch_size(writer: Any) -> int:
    """How many contacts one call of this writer may carry (1: it does not batch)."""
    if not callable(getattr(writer, "write_many", None)):
        return 1
    size = getattr(writer, "batch_size", 1)
    return size if isinstance(size, int) and size > 1 else 1


def deliver_batch(
    ctx: DeliveryContext, destination: str, contact_ids: Sequence[int], owner: str
) -> dict[str, int]:
    """Deliver each contact's latest decision in one call; return the count of each outcome."""
    with ctx.sessions() as session:
        if destinations.is_paused(session, destination):
            session.rollback()
            return {"paused": len(contact_ids)}
        jobs = [Job(destination, contact_id, owner) for contact_id in contact_ids]
        taken = [job for job in jobs if acquire_lease(session, ctx, job)]
        try:
            counts = _deliver_jobs(session, ctx, taken)
        finally:
            for job in taken:
                release_lease(session, job)
    counts["busy"] += len(jobs) - len(taken)
    log.info("batch delivered", destination=destination, **dict(counts))
    return dict(counts)


def _deliver_jobs(session: Session, ctx: DeliveryContext, jobs: list[Job]) -> Counter[str]:
    counts: Counter[str] = Counter()
    due: Due = []
    for job in jobs:
        latest = latest_event(session, job.destination, job.contact_id)
        key = (job.destination, job.contact_id)
        state = session.get(DeliveryState, key, populate_existing=True)
        if latest is None or state is None:
            session.rollback()
            counts["nothing"] += 1
            continue
        ready = prepare_write(session, ctx, job, latest, state)
        if ready is not None:
            counts[ready] += 1
        else:
            due.append((job, latest, state))
    if due:
        counts.update(_write_all(session, ctx, due))
    return counts


Due = list[tuple[Job, Event, DeliveryState]]


def _write_all(session: Session, ctx: DeliveryContext, due: Due) -> list[str]:
    writer: BatchWriter = ctx.writers[due[0][0].destination]  # type: ignore[assignment]
    started = ctx.clock()
    try:
        with one_write():
            results = writer.write_many([as_write(latest) for _job, latest, _state in due])
    except ThrottledError as exc:  # no slot soon enough: nothing was sent for any of them
        return [record_throttled(session, ctx, j, latest, state, exc) for j, latest, state in due]
    except DeliveryError as exc:  # the whole call failed: the same answer for each contact
        results = [exc] * len(due)
    outcomes = []
    for (job, latest, _state), result in zip(due, results, strict=True):
        if isinstance(result, DeliveryError):
            outcomes.append(record_failure(session, ctx, job, latest, started, result))
        else:
            outcomes.append(record_written(session, ctx, job, latest, started, result))
    return outcomes
