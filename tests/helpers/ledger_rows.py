"""Ledger rows for the dead-letter tests (relay.ledger.dead_letters, the admin API and the CLI):
decisions recorded as the intake records them, dead letters written by the delivery worker's
own code (workers.delivery.outcomes.record_dead_letter) under a lease, as the worker holds one."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from relay.domain import Decision
from relay.ledger.db import insert_ignoring_conflicts
from relay.ledger.models import DeadLetter, DeliveryState
from relay.ledger.record import record_decision
from workers.delivery.contact import latest_event
from workers.delivery.outcomes import log_attempt, record_dead_letter
from workers.delivery.policy import FailureHistory
from workers.destinations.errors import DeliveryError, RejectedError, TransientError

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
DESTINATIONS = ("engage", "engage_eu")
OWNER = "test-worker"


def record(
    session: Session,
    email: str,
    consent: str,
    source: str = "signup",
    occurred_at: dt.datetime = T0,
    *,
    consent_source_id: str | None = None,
) -> int:
    """Accept a decision for both destinations as the intake does; return the contact id."""
    return record_decision(
        session,
        source_name=source,
        delivery_id=f"msg_{uuid.uuid4().hex}",
        webhook_timestamp=int(occurred_at.timestamp()),
        body_sha256="0" * 64,
        decision=Decision(email, consent, "registration_form", consent_source_id, occurred_at),
        destinations=DESTINATIONS,
    ).contact_id


def dead_letter(
    session: Session,
    destination: str,
    contact_id: int,
    created: dt.datetime,
    *,
    reason: str = "rejected",
    message: str = "refused 3 times",
    body: str = "{}",
    attempts: int = 3,
    logged: int | None = None,
    attempt_detail: str = "attempt {n}",
) -> int:
    """Dead-letter the contact's latest decision for `destination` at `created`, through the
    worker's record_dead_letter: `attempts` failures since `attempts` minutes before, the last
    `logged` of them (all by default) in the attempt log, one a minute, the last a minute before
    `created`. `message` becomes the dead letter's detail, `body` its last_body; the attempts'
    detail is `attempt_detail` with {n} their number."""
    latest = latest_event(session, destination, contact_id)
    assert latest is not None
    exc: DeliveryError
    if reason == "max_age":
        exc = TransientError(message, status=503, body=body)
    else:
        exc = RejectedError(message, status=400, body=body)
    logged = attempts if logged is None else logged
    for n in range(attempts - logged + 1, attempts + 1):
        started = created - dt.timedelta(minutes=attempts - n + 1)
        finished = started + dt.timedelta(seconds=1)
        outcome, detail = exc.outcome, attempt_detail.format(n=n)
        log_attempt(session, destination, latest, started, finished, outcome, exc.status, detail)
    history = FailureHistory(
        attempts,
        attempts if isinstance(exc, RejectedError) else 0,
        created - dt.timedelta(minutes=attempts),
    )
    key = and_(DeliveryState.destination == destination, DeliveryState.contact_id == contact_id)
    insert_ignoring_conflicts(
        session, DeliveryState, [{"destination": destination, "contact_id": contact_id}]
    )
    session.execute(update(DeliveryState).where(key).values(lease_owner=OWNER))
    assert record_dead_letter(
        session, key, OWNER, destination, latest, history, reason, exc, created
    )
    session.execute(
        update(DeliveryState).where(key).values(lease_owner=None, lease_expires_at=None)
    )
    session.commit()
    dead_id = session.scalar(
        select(func.max(DeadLetter.id)).where(
            DeadLetter.destination == destination, DeadLetter.event_id == latest.id
        )
    )
    assert dead_id is not None
    return dead_id
