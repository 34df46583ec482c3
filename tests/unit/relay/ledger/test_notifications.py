"""Notifications in the ledger (relay/ledger/notifications.py) over a migrated SQLite ledger:
what pauses, resumes and dead letters record, how the sweeper fans events out to targets, which
sends are due, and how a try is settled."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.config.notifications import NotificationSettings, NotificationTarget
from relay.ledger import notifications
from relay.ledger import pauses as destinations
from relay.ledger.models import Notification, NotificationSend
from tests.helpers.delivery_world import Ledger
from tests.helpers.ledger_rows import dead_letter, record

NOW = dt.datetime(2027, 1, 1, 12, tzinfo=dt.UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REDISPATCH = dt.timedelta(seconds=30)


def target(name: str, *events: str) -> NotificationTarget:
    return NotificationTarget(name, f"http://127.0.0.1:9/{name}", SECRET, events)


SETTINGS = NotificationSettings(
    enabled=True,
    targets=(
        target("all", "destination.paused", "destination.resumed", "dead_letter.created"),
        target("pauses", "destination.paused"),
    ),
)


def events(session: Session) -> list[tuple[str, dict[str, object]]]:
    rows = session.scalars(select(Notification).order_by(Notification.id))
    return [(row.type, json.loads(row.data)) for row in rows]


def sends(session: Session) -> list[tuple[str, str]]:
    rows = session.scalars(select(NotificationSend).order_by(NotificationSend.id))
    return [(row.target, row.status) for row in rows]


def test_a_pause_is_recorded_once_and_a_resume_only_when_paused(ledger: Ledger) -> None:
    with ledger.sessions() as session:
        assert destinations.resume(session, "engage", by="operator", now=NOW) is False
        for _ in range(2):  # a second pause (another worker's 401) is not a new event
            destinations.pause(
                session, "engage", by="auth", reason="bad", status=401, now=NOW, probe_in=None
            )
        destinations.resume(session, "engage", by="probe", now=NOW)
        session.commit()
        assert events(session) == [
            ("destination.paused", {"destination": "engage", "by": "auth", "status": 401}),
            ("destination.resumed", {"destination": "engage", "by": "probe"}),
        ]


def test_a_dead_letter_is_recorded_with_ids_only(ledger: Ledger) -> None:
    with ledger.sessions() as session:
        contact = record(session, "dl.notify@example.com", "denied")
        session.commit()
        dead_letter(session, "engage", contact, NOW, reason="rejected")
        [(type_, data)] = events(session)
    assert type_ == "dead_letter.created"
    assert data["destination"] == "engage" and data["contact_id"] == contact
    assert data["reason"] == "rejected" and isinstance(data["event_id"], int)
    assert "@" not in json.dumps(data)


def test_events_fan_out_to_the_targets_that_want_them(ledger: Ledger) -> None:
    with ledger.sessions() as session:
        notifications.record(session, "destination.paused", "engage", {"by": "auth"}, NOW)
        notifications.record(session, "drift.found", "engage", {"seen": "granted"}, NOW, 5)
        assert notifications.fan_out(session, SETTINGS, NOW) == 2
        session.commit()
        assert sends(session) == [("all", "pending"), ("pauses", "pending")]
        assert notifications.fan_out(session, SETTINGS, NOW) == 0  # each event once
        ids = session.scalars(select(NotificationSend.message_id)).all()
        assert len(set(ids)) == 2 and all(i.startswith("msg_") for i in ids)


def test_while_off_events_are_marked_without_sends(ledger: Ledger) -> None:
    off = NotificationSettings(enabled=False, targets=SETTINGS.targets)
    with ledger.sessions() as session:
        notifications.record(session, "destination.paused", "engage", {"by": "auth"}, NOW)
        assert notifications.fan_out(session, off, NOW) == 0
        session.commit()
        assert sends(session) == []
        assert notifications.fan_out(session, SETTINGS, NOW) == 0  # old events stay quiet


def test_due_sends_are_dispatched_once_until_redispatch(ledger: Ledger) -> None:
    with ledger.sessions() as session:
        notifications.record(session, "destination.paused", "engage", {"by": "auth"}, NOW)
        notifications.fan_out(session, SETTINGS, NOW)
        due = notifications.due_sends(session, NOW, REDISPATCH)
        assert len(due) == 2
        assert notifications.due_sends(session, NOW + dt.timedelta(seconds=5), REDISPATCH) == []
        later = NOW + REDISPATCH + dt.timedelta(seconds=1)  # the task was lost
        assert notifications.due_sends(session, later, REDISPATCH) == due


def test_a_try_is_settled_retried_or_failed(ledger: Ledger) -> None:
    with ledger.sessions() as session:
        notifications.record(session, "destination.paused", "engage", {"by": "auth"}, NOW)
        notifications.fan_out(session, SETTINGS, NOW)
        first, second = notifications.due_sends(session, NOW, REDISPATCH)
        session.commit()
        item = notifications.outgoing(session, first)
        assert item is not None and item.type == "destination.paused"
        assert item.data == {"destination": "engage", "by": "auth"} and item.attempts == 0
        retry_at = NOW + dt.timedelta(seconds=10)
        notifications.settle(
            session,
            first,
            status="pending",
            attempts=1,
            http_status=503,
            error="HTTP 503",
            now=NOW,
            retry_at=retry_at,
        )
        notifications.settle(
            session, second, status="failed", attempts=1, http_status=401, error="x", now=NOW
        )
        session.commit()
        assert notifications.outgoing(session, second) is None
        assert notifications.due_sends(session, NOW + dt.timedelta(seconds=5), REDISPATCH) == []
        assert notifications.due_sends(session, retry_at, REDISPATCH) == [first]
