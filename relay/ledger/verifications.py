"""Read-back verification as the operator page and the admin surfaces show it: per contact,
when each destination was last verified and what was seen; per destination, the share of
delivered contacts whose latest delivered decision was read back and found there.
The workers write these rows (workers/verification/readback.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from relay.config.settings import DestinationSettings
from relay.ledger.models import DeliveryState, Verification
from schemas.destinations import VERIFIABLE_KINDS


@dataclass(frozen=True)
class Coverage:
    destination: str
    verifiable: bool
    delivered: int  # contacts holding a delivered decision
    verified: int  # of which the latest delivered decision was read back and found
    drift: int  # whose last read-back found something else
    last_checked_at: dt.datetime | None

    @property
    def share(self) -> float | None:
        return None if not self.delivered else self.verified / self.delivered


def verifiable(settings: DestinationSettings) -> bool:
    return settings.kind in VERIFIABLE_KINDS and settings.verify_share > 0


def coverage(session: Session, destinations: Mapping[str, DestinationSettings]) -> list[Coverage]:
    """Three grouped queries: delivered contacts, verified and drifting ones, last read."""
    delivered = dict(
        session.execute(
            select(DeliveryState.destination, func.count())
            .where(DeliveryState.delivered_event_id.is_not(None))
            .group_by(DeliveryState.destination)
        ).all()
    )
    current = and_(
        Verification.destination == DeliveryState.destination,
        Verification.contact_id == DeliveryState.contact_id,
        Verification.event_id == DeliveryState.delivered_event_id,
    )
    by_status: dict[tuple[str, str | None], int] = {
        (d, s): n
        for d, s, n in session.execute(
            select(Verification.destination, Verification.status, func.count())
            .join(DeliveryState, current)
            .group_by(Verification.destination, Verification.status)
        ).all()
    }
    last = dict(
        session.execute(
            select(Verification.destination, func.max(Verification.checked_at)).group_by(
                Verification.destination
            )
        ).all()
    )
    return [
        Coverage(
            name,
            verifiable(settings),
            delivered.get(name, 0),
            by_status.get((name, "verified"), 0),
            by_status.get((name, "drift"), 0),
            last.get(name),
        )
        for name, settings in sorted(destinations.items())
    ]


def for_contact(session: Session, contact_id: int) -> dict[str, Verification]:
    """The contact's verification row of each destination (primary key)."""
    rows = session.scalars(select(Verification).where(Verification.contact_id == contact_id))
    return {row.destination: row for row in rows}
