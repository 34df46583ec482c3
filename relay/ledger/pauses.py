"""Pause and resume of destinations, shared by the workers, the CLI and the admin API.

A destination is paused when it refuses our credentials (Engage 401, 403, 417 account
expired: docs/reference/engage.md#responses-and-errors) or when an operator says so. While paused
nothing is sent to it and its events stay pending: no retries are burnt and nothing is
dead-lettered. An auth pause is lifted by a successful probe; an operator pause only by an operator.
Each pause and resume is announced (relay/ledger/notifications.py), in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.ledger import notifications
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import DeliveryState, DestinationStatus
from schemas.notifications import DESTINATION_PAUSED, DESTINATION_RESUMED


@dataclass(frozen=True)
class DestinationView:
    name: str
    paused: bool
    paused_at: dt.datetime | None
    paused_by: str | None
    paused_reason: str | None
    paused_status: int | None
    next_probe_at: dt.datetime | None
    last_probe_at: dt.datetime | None
    last_probe_error: str | None
    resumed_at: dt.datetime | None
    resumed_by: str | None

    def as_json(self) -> dict[str, object]:
        return {
            key: value.isoformat() if isinstance(value, dt.datetime) else value
            for key, value in self.__dict__.items()
        }


def _row(session: Session, name: str) -> DestinationStatus:
    insert_ignoring_conflicts(session, DestinationStatus, [{"name": name}])
    row = session.get(DestinationStatus, name, populate_existing=True)
    assert row is not None  # inserted just above
    return row


def is_paused(session: Session, name: str) -> bool:
    paused_at = session.scalar(
        select(DestinationStatus.paused_at).where(DestinationStatus.name == name)
    )
    return paused_at is not None


def paused_names(session: Session) -> set[str]:
    rows = session.scalars(
        select(DestinationStatus.name).where(DestinationStatus.paused_at.is_not(None))
    )
    return set(rows)


def pause(
    session: Session,
    name: str,
    *,
    by: str,
    reason: str,
    status: int | None,
    now: dt.datetime,
    probe_in: dt.timedelta | None,
) -> None:
    """Pause `name` (idempotent: an existing pause keeps its start time). The caller commits."""
    row = _row(session, name)
    if row.paused_at is None:
        row.paused_at = now
        # No reason in the notification: it is free text (an operator's, or the vendor's answer).
        data = {"by": by, "status": status}
        notifications.record(session, DESTINATION_PAUSED, name, data, now)
    if row.paused_by != "operator":  # an operator's pause is not turned into an auth pause
        row.paused_by = by
    row.paused_reason = reason
    row.paused_status = status
    row.next_probe_at = now + probe_in if probe_in is not None and row.paused_by == "auth" else None


def resume(session: Session, name: str, *, by: str, now: dt.datetime) -> bool:
    """Lift the pause; pending work for the destination becomes due at once. The caller
    commits. Returns whether the destination was paused."""
    row = _row(session, name)
    was_paused = row.paused_at is not None
    row.paused_at = row.paused_by = row.paused_reason = row.paused_status = None
    row.next_probe_at = None
    if was_paused:
        row.resumed_at, row.resumed_by = now, by
        notifications.record(session, DESTINATION_RESUMED, name, {"by": by}, now)
        session.execute(
            update(DeliveryState)
            .where(DeliveryState.destination == name)
            .values(next_attempt_at=None, dispatched_at=None)
        )
    return was_paused


def record_probe(
    session: Session, name: str, *, error: str | None, now: dt.datetime, next_in: dt.timedelta
) -> None:
    """Remember a failed probe and when to try the next one. The caller commits."""
    row = _row(session, name)
    row.last_probe_at = now
    row.last_probe_error = error
    if row.paused_at is not None and row.paused_by == "auth":
        row.next_probe_at = now + next_in


def probes_due(session: Session, now: dt.datetime) -> list[str]:
    return list(
        session.scalars(
            select(DestinationStatus.name).where(
                DestinationStatus.paused_at.is_not(None),
                DestinationStatus.paused_by == "auth",
                DestinationStatus.next_probe_at <= now,
            )
        )
    )


def describe(session: Session, names: Iterable[str]) -> list[DestinationView]:
    """Every configured destination, paused or not (a row exists only once one was paused)."""
    rows = {row.name: row for row in session.scalars(select(DestinationStatus))}
    views = []
    for name in sorted(names):
        row = rows.get(name)
        views.append(
            DestinationView(
                name=name,
                paused=row is not None and row.paused_at is not None,
                paused_at=row.paused_at if row else None,
                paused_by=row.paused_by if row else None,
                paused_reason=row.paused_reason if row else None,
                paused_status=row.paused_status if row else None,
                next_probe_at=row.next_probe_at if row else None,
                last_probe_at=row.last_probe_at if row else None,
                last_probe_error=row.last_probe_error if row else None,
                resumed_at=row.resumed_at if row else None,
                resumed_by=row.resumed_by if row else None,
            )
        )
    return views
