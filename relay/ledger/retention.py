"""Retention (docs/data-protection.md#retention): prune rows that are not the proof of a
decision once they are older than `[retention]` says, in small batches.

Prunable: delivery attempts, ignored events, dead letters that were resolved (replayed,
superseded, erased) and the outbox rows of superseded decisions. Never pruned: decisions
(events), contacts, erasures, chain heads and audit entries: the chains run over events and
erasures only (relay/ledger/chain_store.py) and the audit log over its own table, so pruning
leaves every chain verifiable.

A failed erasure at a destination still holding its sealed identifier is not deleted (the
erasure's per-destination status is part of its record) but acknowledged, the seal wiped,
`failed_destination_erasures_days` after it failed (relay/ledger/erasure_failures.py).

Each batch is its own short transaction (select up to `batch_size` ids, delete them, commit),
so a run never holds locks long enough to block the intake or a delivery; a run stops after
`max_batches` batches and the next run carries on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from relay.config.settings import RetentionSettings
from relay.ledger import erasure_failures
from relay.ledger.models import (
    DeadLetter,
    DeliveryAttempt,
    IgnoredEvent,
    Outbox,
    RetentionRun,
    utcnow,
)
from relay.telemetry import metrics

FAILED_ERASURES = "failed_destination_erasures"  # acknowledged, not deleted


@dataclass(frozen=True)
class Rule:
    """One prunable kind of row: its table, its age column, and which rows may go at all."""

    model: Any
    age: Any
    days: Callable[[RetentionSettings], int]
    only: Callable[[], Any] | None = None


RULES: Mapping[str, Rule] = {
    "delivery_attempts": Rule(
        DeliveryAttempt, DeliveryAttempt.finished_at, lambda r: r.delivery_attempts_days
    ),
    "ignored_events": Rule(IgnoredEvent, IgnoredEvent.received_at, lambda r: r.ignored_events_days),
    "dead_letters": Rule(
        DeadLetter,
        DeadLetter.resolved_at,
        lambda r: r.resolved_dead_letters_days,
        lambda: DeadLetter.status != "open",
    ),
    "outbox": Rule(
        Outbox,
        Outbox.settled_at,
        lambda r: r.superseded_deliveries_days,
        lambda: Outbox.status == "superseded",
    ),
}


def prune(
    sessions: sessionmaker[Session],
    settings: RetentionSettings,
    now: dt.datetime | None = None,
) -> dict[str, int]:
    """Prune every kind whose retention is set; record the run; answer rows removed per table."""
    now = now or utcnow()
    pruned = {}
    for table, rule in RULES.items():
        days = rule.days(settings)
        if days > 0:
            pruned[table] = _prune(sessions, rule, now - dt.timedelta(days=days), settings)
            metrics.count_pruned(table, pruned[table])
    pruned["ignored_bodies"] = _expire_bodies(sessions, now, settings)
    metrics.count_pruned("ignored_bodies", pruned["ignored_bodies"])
    if settings.failed_destination_erasures_days > 0:
        pruned[FAILED_ERASURES] = _expire_seals(sessions, now, settings)
        metrics.count_pruned(FAILED_ERASURES, pruned[FAILED_ERASURES])
    with sessions() as session:
        session.add(RetentionRun(finished_at=utcnow(), pruned=json.dumps(pruned, sort_keys=True)))
        session.commit()
    return pruned


def _prune(
    sessions: sessionmaker[Session], rule: Rule, cutoff: dt.datetime, settings: RetentionSettings
) -> int:
    total = 0
    for _ in range(settings.max_batches):
        with sessions() as session:
            query = select(rule.model.id).where(rule.age.is_not(None), rule.age < cutoff)
            if rule.only is not None:
                query = query.where(rule.only())
            ids = list(session.scalars(query.order_by(rule.model.id).limit(settings.batch_size)))
            if ids:
                session.execute(delete(rule.model).where(rule.model.id.in_(ids)))
            session.commit()
        total += len(ids)
        if len(ids) < settings.batch_size:
            break
    return total


def _expire_bodies(
    sessions: sessionmaker[Session], now: dt.datetime, settings: RetentionSettings
) -> int:
    """The kept bodies of ignored events past their time (the event's row and digest stay)."""
    total = 0
    for _ in range(settings.max_batches):
        with sessions() as session:
            query = select(IgnoredEvent.id).where(IgnoredEvent.kept_until < now)
            ids = list(session.scalars(query.limit(settings.batch_size)))
            if ids:
                session.execute(
                    update(IgnoredEvent)
                    .where(IgnoredEvent.id.in_(ids))
                    .values(kept_body=None, kept_until=None)
                )
            session.commit()
        total += len(ids)
        if len(ids) < settings.batch_size:
            break
    return total


def _expire_seals(
    sessions: sessionmaker[Session], now: dt.datetime, settings: RetentionSettings
) -> int:
    """Failed erasures at a destination past their days: acknowledged, the seal wiped."""
    days = settings.failed_destination_erasures_days
    cutoff, note = now - dt.timedelta(days=days), f"retention: failed over {days} days ago"
    total = 0
    for _ in range(settings.max_batches):
        with sessions() as session:
            done = erasure_failures.expire_sealed(session, cutoff, settings.batch_size, note, now)
            session.commit()
        total += done
        if done < settings.batch_size:
            break
    return total


def last_run(session: Session) -> tuple[dt.datetime, dict[str, int]] | None:
    """The newest run: when it finished and what it removed (the operator page)."""
    run = session.scalars(select(RetentionRun).order_by(RetentionRun.id.desc()).limit(1)).first()
    return None if run is None else (run.finished_at, json.loads(run.pruned))
