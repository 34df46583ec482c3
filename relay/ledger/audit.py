"""The operator audit log (docs/data-protection.md#audit-log): every pause, resume, replay,
export, erasure and reprocess, with who, when, from where, what and the outcome.

An entry is appended in the action's own transaction where the action writes (pause, resume,
replay, erasure), so that an action without its entry, or an entry without its action, cannot
be committed. An export writes nothing else, so its entry is the only write of its transaction.

The entries form one hash chain, with the same canonical hashing as the contacts' chains
(relay/ledger/chain.py), and a head row, so that a changed, removed, inserted or reordered
entry is found by `consent-relay ledger verify` and POST /admin/ledger/verify.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.ledger import chain
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import AuditEntry, AuditHead, utcnow

HEAD_ID = 1
VERIFY_BATCH = 1000
ACTIONS = (
    *("pause", "resume", "replay", "export", "erasure", "reprocess"),
    *("erasure-retry", "erasure-acknowledge"),  # a failed erasure at a destination
)
CSV_FIELDS = (
    *("seq", "at", "actor_kind", "actor", "client", "channel"),
    *("action", "targets", "outcome", "chain_hash"),
)


@dataclass(frozen=True)
class Actor:
    """Who acted, and through what: an admin token (by fingerprint), the signed-in operator of
    the operator page, or the OS user running the CLI; the client address for the web."""

    kind: str  # admin-token | operator | cli
    name: str
    channel: str  # admin-api | ops-page | cli
    client: str | None = None


def token_fingerprint(token: str) -> str:
    """Names an admin token without revealing it: the first 12 hex digits of its SHA-256."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def entry_content(entry: AuditEntry) -> dict[str, Any]:
    return {
        "v": chain.CHAIN_VERSION,
        "type": "audit",
        "seq": entry.seq,
        "at": chain.timestamp(entry.at),
        "actor_kind": entry.actor_kind,
        "actor": entry.actor,
        "client": entry.client,
        "channel": entry.channel,
        "action": entry.action,
        "targets": json.loads(entry.targets),
        "outcome": entry.outcome,
    }


def record(
    session: Session,
    actor: Actor,
    action: str,
    targets: Sequence[str | int],
    outcome: str,
    *,
    now: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry to the session's transaction (the caller commits). The head's UPDATE
    comes first, so that two writers are serialised (row lock on PostgreSQL, the database lock
    on SQLite) and the chain never forks."""
    assert action in ACTIONS, action
    insert_ignoring_conflicts(session, AuditHead, [{"id": HEAD_ID}])
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=AuditHead.seq + 1))
    seq, head = session.execute(
        select(AuditHead.seq, AuditHead.head).where(AuditHead.id == HEAD_ID)
    ).one()
    entry = AuditEntry(
        seq=int(seq),
        at=now or utcnow(),
        actor_kind=actor.kind,
        actor=actor.name[:255],
        client=actor.client[:64] if actor.client else None,
        channel=actor.channel,
        action=action,
        targets=json.dumps([str(target) for target in targets]),
        outcome=outcome[:500],
        chain_hash="",
    )
    entry.chain_hash = chain.link_hash(head, chain.content_hash(entry_content(entry)))
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(head=entry.chain_hash))
    session.add(entry)
    return entry


def verify(session: Session) -> tuple[int, chain.Break | None]:
    """(entries checked, the first break or None), in constant memory."""
    head = session.get(AuditHead, HEAD_ID)
    head_seq, head_hash = (head.seq, head.head) if head else (0, chain.GENESIS)
    previous, position = chain.GENESIS, 0
    for entry in _entries(session):
        position += 1
        ref = f"audit {entry.seq}"
        if entry.seq != position:
            missing = "missing" if entry.seq > position else "duplicated"
            return position, chain.Break(position, ref, f"audit entry {position} is {missing}")
        if chain.link_hash(previous, chain.content_hash(entry_content(entry))) != entry.chain_hash:
            return position, chain.Break(entry.seq, ref, "content does not match the stored hash")
        previous = entry.chain_hash
    if position != head_seq or previous != head_hash:
        why = f"the audit log ends at entry {position} but its head is entry {head_seq}"
        if position == head_seq:
            why = "the audit log's head hash does not match the last entry"
        return position, chain.Break(head_seq, "audit head", why)
    return position, None


def _entries(session: Session) -> Iterator[AuditEntry]:
    after = 0
    while True:
        query = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
        batch = list(session.scalars(query.limit(VERIFY_BATCH)))
        if not batch:
            return
        yield from batch
        after = batch[-1].seq
        session.expunge_all()


def recent(session: Session, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def as_json(entry: AuditEntry) -> dict[str, Any]:
    return {**entry_content(entry), "chain_hash": entry.chain_hash}


def as_csv(entries: Sequence[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for entry in entries:
        row = as_json(entry)
        row["targets"] = " ".join(row["targets"])
        writer.writerow(row)
    return out.getvalue()
