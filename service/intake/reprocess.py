"""Reprocessing ignored events after a mapping fix (docs/data-protection.md#reprocess).

At intake, with `[retention] keep_ignored_bodies_days`, the request an event was ignored in is
kept, sealed with `[privacy] ignored_bodies_key` (relay/ledger/kept_bodies.py). `reprocess`
runs each kept request through the kind's parser and the *current* mapping, as the intake
would have: an event that now carries a decision is recorded (its sender's id makes a second
run, or a redelivery since, a duplicate, never a second decision) and leaves the ignored
events; one still without a decision stays. The sweeper delivers what was recorded. The
signature is not checked again (it was when the request arrived; its timestamp has expired).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from relay.ledger import audit, kept_bodies
from relay.ledger.models import IgnoredEvent, utcnow
from relay.ledger.record import Incoming, Outcome, record_events
from relay.telemetry.logs import get_logger
from service.runtime import Runtime
from service.sources.base import Authenticated, InboundRequest, storable_events

log = get_logger(__name__)
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def envelope(inbound: InboundRequest, auth: Authenticated) -> dict[str, Any]:
    """What the kind's parser needs again; credentials sent as headers are not kept."""
    return {
        "method": inbound.method,
        "url": inbound.url,
        "headers": {k: v for k, v in inbound.headers.items() if k not in DROPPED_HEADERS},
        "query": dict(inbound.query),
        "body": base64.b64encode(inbound.body).decode(),
        "mimetype": inbound.mimetype,
        "form": dict(inbound.form),
        "received_at": inbound.received_at,
        "delivery_id": auth.delivery_id,
        "timestamp": auth.timestamp,
    }


def keep_ignored(
    runtime: Runtime,
    source_name: str,
    inbound: InboundRequest,
    auth: Authenticated,
    outcomes: Sequence[Outcome],
) -> None:
    """Best effort after the intake's commit: a failure here loses the body, not the event."""
    days = runtime.settings.retention.keep_ignored_bodies_days
    key = runtime.settings.privacy.ignored_bodies_key
    ignored = [o.delivery_id for o in outcomes if o.status == "ignored"]
    if not (days and key and ignored):
        return
    until = utcnow() + dt.timedelta(days=days)
    try:
        with runtime.sessions() as session:
            token = kept_bodies.seal(key, envelope(inbound, auth))
            kept_bodies.keep(session, source_name, ignored, token, until)
            session.commit()
    except SQLAlchemyError:
        log.warning("the ignored event's body could not be kept", exc_info=True)


@dataclass
class ReprocessResult:
    recorded: list[int] = field(default_factory=list)  # ignored event ids now decisions
    duplicates: list[int] = field(default_factory=list)  # recorded already (a second run)
    still_ignored: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)  # the key cannot open the body

    def as_json(self) -> dict[str, list[int]]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return " ".join(f"{name}={len(ids)}" for name, ids in self.__dict__.items())


def reprocess(
    runtime: Runtime, actor: audit.Actor, source_name: str | None = None
) -> ReprocessResult:
    """Every kept body not yet expired (of one source, or all); audited as one action."""
    result = ReprocessResult()
    key = runtime.settings.privacy.ignored_bodies_key
    with runtime.sessions() as session:
        rows = kept_bodies.reprocessable(session, utcnow(), source_name) if key else []
        for row in rows:
            if row.source_name in runtime.kinds and key:
                _one(runtime, session, key, row, result)
        targets = [f"ignored {i}" for i in result.recorded + result.duplicates]
        audit.record(session, actor, "reprocess", targets, result.summary())
        session.commit()
    return result


def _one(
    runtime: Runtime, session: Session, key: str, row: IgnoredEvent, result: ReprocessResult
) -> None:
    try:
        sealed = kept_bodies.open_sealed(key, row.kept_body or "")
    except kept_bodies.KeptBodyUnreadableError:
        result.unreadable.append(row.id)
        return
    item = _incoming(runtime, row.source_name, sealed, row.delivery_id)
    if item is None or item.decision is None:
        result.still_ignored.append(row.id)
        return
    [outcome] = record_events(
        session,
        source_name=row.source_name,
        webhook_timestamp=sealed["timestamp"] or int(sealed["received_at"]),
        body_sha256=row.body_sha256,
        incoming=[item],
        destinations=tuple(runtime.settings.destinations),
        at_once=False,
    )
    (result.recorded if outcome.status == "accepted" else result.duplicates).append(row.id)
    session.execute(delete(IgnoredEvent).where(IgnoredEvent.id == row.id))


def _incoming(
    runtime: Runtime, source_name: str, sealed: dict[str, Any], delivery_id: str
) -> Incoming | None:
    from service.intake.routes import to_incoming  # the intake's own mapping step

    inbound = InboundRequest(
        method=sealed["method"],
        url=sealed["url"],
        headers=sealed["headers"],
        query=sealed["query"],
        body=base64.b64decode(sealed["body"]),
        mimetype=sealed["mimetype"],
        form=sealed["form"],
        received_at=sealed["received_at"],
    )
    auth = Authenticated(sealed["delivery_id"], sealed["timestamp"])
    events = storable_events(runtime.kinds[source_name].parse(inbound, auth))
    for event in events:
        if event.event_id == delivery_id:
            return to_incoming(runtime, source_name, event)
    return None
