"""Operational notifications in the ledger: recorded with what caused them, sent later.

`record` is called inside the transaction that pauses or resumes a destination, creates a dead
letter or finds drift, by the web, the CLI and the workers alike, so a notification exists
exactly when its cause was committed and nothing waits on a webhook. The sweeper then fans each
recorded event out to the targets that want it (`fan_out`) and publishes the sends that are due
(`due_sends`); workers/notifications/send.py sends one and records the result here.
docs/operations/notifications.md.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from relay.config.notifications import NotificationSettings
from relay.ledger.models import Notification, NotificationSend

Data = Mapping[str, str | int | float | bool | None]


@dataclass(frozen=True)
class Outgoing:
    """What one send needs, read in one short transaction (no session held over HTTP)."""

    send_id: int
    target: str
    message_id: str
    type: str
    created_at: dt.datetime
    data: dict[str, Any]
    attempts: int


def record(
    session: Session,
    type_: str,
    destination: str,
    data: Data,
    now: dt.datetime,
    contact_id: int | None = None,
) -> None:
    """Note an event to announce (the caller commits). `data` holds ids and labels only."""
    body = {"destination": destination, **({"contact_id": contact_id} if contact_id else {})}
    body.update(data)
    session.add(
        Notification(
            type=type_,
            destination=destination,
            contact_id=contact_id,
            data=json.dumps(body, sort_keys=True),
            created_at=now,
        )
    )


def fan_out(session: Session, settings: NotificationSettings, now: dt.datetime) -> int:
    """One send per recorded event and target that wants it; events nobody wants (or all of
    them while notifications are off) are only marked. The caller commits."""
    rows = session.scalars(
        select(Notification).where(Notification.fanned_out_at.is_(None)).order_by(Notification.id)
    ).all()
    created = 0
    for row in rows:
        for target in settings.wanting(row.type):
            session.add(
                NotificationSend(
                    notification_id=row.id,
                    target=target.name,
                    message_id=f"msg_{uuid.uuid4().hex}",
                    status="pending",
                    attempts=0,
                )
            )
            created += 1
        row.fanned_out_at = now
    return created


def due_sends(session: Session, now: dt.datetime, redispatch_after: dt.timedelta) -> list[int]:
    """Pending sends whose time has come and that no task holds (or whose task was lost);
    marked dispatched. The caller commits."""
    ids = list(
        session.scalars(
            select(NotificationSend.id).where(
                NotificationSend.status == "pending",
                or_(
                    NotificationSend.next_attempt_at.is_(None),
                    NotificationSend.next_attempt_at <= now,
                ),
                or_(
                    NotificationSend.dispatched_at.is_(None),
                    NotificationSend.dispatched_at <= now - redispatch_after,
                ),
            )
        )
    )
    if ids:
        session.execute(
            update(NotificationSend)
            .where(NotificationSend.id.in_(ids))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


def outgoing(session: Session, send_id: int) -> Outgoing | None:
    """The pending send `send_id` with its event; None once it is settled."""
    send = session.get(NotificationSend, send_id)
    if send is None or send.status != "pending":
        return None
    event = session.get(Notification, send.notification_id)
    assert event is not None  # a foreign key
    return Outgoing(
        send_id=send.id,
        target=send.target,
        message_id=send.message_id,
        type=event.type,
        created_at=event.created_at,
        data=json.loads(event.data),
        attempts=send.attempts,
    )


def settle(
    session: Session,
    send_id: int,
    *,
    status: str,
    attempts: int,
    http_status: int | None,
    error: str | None,
    now: dt.datetime,
    retry_at: dt.datetime | None = None,
) -> None:
    """Record one try: sent, failed, or pending again at `retry_at`. The caller commits."""
    session.execute(
        update(NotificationSend)
        .where(NotificationSend.id == send_id, NotificationSend.status == "pending")
        .values(
            status=status,
            attempts=attempts,
            last_status=http_status,
            last_error=error[:200] if error else None,
            next_attempt_at=retry_at,
            dispatched_at=None,
            sent_at=now if status == "sent" else None,
        )
        .execution_options(synchronize_session=False)
    )
