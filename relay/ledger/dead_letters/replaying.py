"""Replay: open dead letters go back to the outbox, in bulk, each at most once; then the
caller enqueues the pairs after its commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from relay.errors import RelayError
from relay.ledger.dead_letters.listing import DeadLetterFilters, filtered
from relay.ledger.models import DeadLetter, DeliveryState, Outbox

SKIP_REASONS = {
    "replayed": "already replayed",
    "superseded": "superseded by a newer decision",
}
# Bounds the IN lists (SQLite allows 32766 parameters; a pair costs two) and the rows locked
# per statement, so that replaying 10,000 dead letters is a few dozen bulk statements.
CHUNK_SIZE = 500
# Publishing is only an accelerator: beat's sweeper enqueues every pending outbox row anyway.
# Past this many pairs a request would spend seconds on the broker for no gain.
ENQUEUE_LIMIT = 1000

Pair = tuple[str, int]


class ReplayRefused(RelayError, ValueError):
    """Replay was asked without ids, filters or an explicit `all`, or with ambiguous ones
    (the admin API answers 422 with the message; the CLI prints it)."""

    http_status = 422


@dataclass
class ReplayResult:
    replayed: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)
    pairs: set[Pair] = field(default_factory=set)  # (destination, contact_id) to enqueue


def replay(
    session: Session,
    *,
    ids: Sequence[int] | None = None,
    filters: DeadLetterFilters | None = None,
    replay_all: bool = False,
    now: dt.datetime,
) -> ReplayResult:
    """Send open dead letters back to the outbox. The caller commits, then enqueues
    `result.pairs` (see `enqueue`). Idempotent: a dead letter is replayed at most once.

    Give exactly one of `ids`, narrowing `filters` (which select *open* dead letters; their
    status, limit and offset are ignored) or `replay_all=True`."""
    result = ReplayResult()
    for chunk in _chunks(_targets(session, ids, filters, replay_all)):
        _replay_chunk(session, chunk, now, result)
    return result


def _targets(
    session: Session,
    ids: Sequence[int] | None,
    filters: DeadLetterFilters | None,
    replay_all: bool,
) -> list[int]:
    narrowed = filters is not None and filters.selects_something()
    if sum((bool(ids), narrowed, replay_all)) != 1:
        raise ReplayRefused(
            "give dead letter ids, filters (destination, source, email, since, until) "
            "or all, and only one of them"
        )
    if ids:
        return list(dict.fromkeys(ids))  # de-duplicated, in the order given
    selection = replace(filters or DeadLetterFilters(), status="open", limit=None, offset=0)
    return list(session.scalars(filtered(select(DeadLetter.id), selection)))


def _replay_chunk(
    session: Session, chunk: list[int], now: dt.datetime, result: ReplayResult
) -> None:
    # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers) makes a
    # concurrent replay of the same ids wait and then see them replayed: replayed once.
    rows = session.execute(
        select(DeadLetter.id, DeadLetter.destination, DeadLetter.contact_id, DeadLetter.status)
        .where(DeadLetter.id.in_(chunk))
        .with_for_update()
    ).all()
    found = {row.id: row for row in rows}
    opened: list[int] = []
    pairs: set[Pair] = set()
    for dead_id in chunk:
        row = found.get(dead_id)
        if row is None:
            result.unknown.append(dead_id)
        elif row.status != "open":
            result.skipped[dead_id] = SKIP_REASONS.get(row.status, f"status is {row.status}")
        else:
            opened.append(dead_id)
            pairs.add((row.destination, row.contact_id))
    if opened:
        _reopen(session, opened, pairs, now)
        result.replayed.extend(opened)
        result.pairs |= pairs


def _reopen(session: Session, dead_ids: list[int], pairs: set[Pair], now: dt.datetime) -> None:
    """Three bulk UPDATEs per chunk, whatever the number of dead letters in it."""
    no_sync = {"synchronize_session": False}
    session.execute(
        update(DeadLetter)
        .where(DeadLetter.id.in_(dead_ids), DeadLetter.status == "open")
        .values(status="replayed", resolved_at=now, replay_count=DeadLetter.replay_count + 1)
        .execution_options(**no_sync)
    )
    session.execute(
        update(Outbox)
        .where(
            Outbox.status == "dead_lettered",
            tuple_(Outbox.destination, Outbox.contact_id).in_(sorted(pairs)),
        )
        .values(status="pending", settled_by_event_id=None, settled_at=None)
        .execution_options(**no_sync)
    )
    # A clean slate: the replayed decision gets the full retry budget again, at once.
    session.execute(
        update(DeliveryState)
        .where(tuple_(DeliveryState.destination, DeliveryState.contact_id).in_(sorted(pairs)))
        .values(
            attempts=0, rejections=0, failing_since=None, next_attempt_at=None, dispatched_at=None
        )
        .execution_options(**no_sync)
    )


def enqueue(
    pairs: Iterable[Pair], publish: Callable[[str, int], bool], limit: int = ENQUEUE_LIMIT
) -> int:
    """Publish delivery tasks after the commit; return how many were sent.

    Stops at the first failure and after `limit`: the rows are pending, so beat's sweeper
    enqueues whatever is left within a few sweeps."""
    sent = 0
    for destination, contact_id in sorted(pairs)[:limit]:
        if not publish(destination, contact_id):
            break
        sent += 1
    return sent


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK_SIZE):
        yield ids[start : start + CHUNK_SIZE]
