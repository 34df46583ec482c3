"""Send one notification to its target, signed as a Standard Webhooks sender, and record the
outcome (docs/operations/notifications.md).

Headers: webhook-id (the send's own id, the same on every retry so a receiver can drop a
duplicate), webhook-timestamp, webhook-signature (`v1,` + base64 HMAC-SHA256 of
"id.timestamp.body" under the target's secret), made by the `standardwebhooks` package
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
Retries wait in the ledger (`next_attempt_at`), not in the broker; the sweeper publishes what is
due. Logs and metrics name the target and the ids, never its URL or an address.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
import standardwebhooks
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from relay.config.notifications import NotificationSettings, NotificationTarget
from relay.ledger import notifications
from relay.ledger.models import utcnow
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from workers.delivery.context import delivery_context
from workers.notifications import policy
from workers.notifications.body import build_body

log = get_logger(__name__)
PublishSend = Callable[[int], None]  # a send's id


@dataclass
class NotificationContext:
    sessions: sessionmaker[Session]
    settings: NotificationSettings
    redispatch_after_seconds: float = 30.0
    http: requests.Session = field(default_factory=requests.Session)
    clock: Callable[[], dt.datetime] = utcnow


_contexts: dict[tuple[int, int], NotificationContext] = {}


def notification_context(app: Celery) -> NotificationContext:
    """One context per process (keyed by pid: prefork children must not share connections)."""
    key = (os.getpid(), id(app))
    if key not in _contexts:
        settings = app.conf.consent_relay_settings
        _contexts[key] = NotificationContext(
            delivery_context(app).sessions,
            settings.notifications,
            settings.delivery.redispatch_after_seconds,
        )
    return _contexts[key]


def schedule_notifications(ctx: NotificationContext, publish: PublishSend) -> int:
    """Fan recorded events out to their targets and publish every send that is due."""
    now = ctx.clock()
    redispatch = dt.timedelta(seconds=ctx.redispatch_after_seconds)
    with ctx.sessions() as session:
        notifications.fan_out(session, ctx.settings, now)
        due = notifications.due_sends(session, now, redispatch)
        session.commit()
    for send_id in due:
        publish(send_id)
    return len(due)


def send_notification(ctx: NotificationContext, send_id: int) -> str:
    """One try; returns sent, retry, failed or settled (nothing left to do)."""
    with ctx.sessions() as session:
        item = notifications.outgoing(session, send_id)
        session.rollback()  # never hold a transaction across an HTTP call
    if item is None:
        return "settled"
    target = ctx.settings.target(item.target)
    if target is None:  # removed from the config since
        return _record(ctx, item, None, "unknown target", policy.GiveUp("unknown_target"))
    status, error = _post(ctx, target, item)
    plan = policy.plan_after_send(status, item.attempts + 1, ctx.clock(), ctx.settings)
    return _record(ctx, item, status, error, plan)


def _post(
    ctx: NotificationContext, target: NotificationTarget, item: notifications.Outgoing
) -> tuple[int | None, str | None]:
    body = build_body(target.format, item.type, item.created_at, item.data)
    now = dt.datetime.now(dt.UTC)
    signature = standardwebhooks.Webhook(target.secret).sign(item.message_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": item.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    timeout = ctx.settings.timeout_seconds
    try:
        response = ctx.http.post(target.url, data=body.encode(), headers=headers, timeout=timeout)
    except requests.RequestException as exc:  # timeouts, refused or broken connections
        return None, type(exc).__name__
    return response.status_code, None if response.ok else f"HTTP {response.status_code}"


def _record(
    ctx: NotificationContext,
    item: notifications.Outgoing,
    status: int | None,
    error: str | None,
    plan: policy.Plan,
) -> str:
    now = ctx.clock()
    outcome = {policy.Sent: "sent", policy.Retry: "retry"}.get(type(plan), "failed")
    retry_at = plan.at if isinstance(plan, policy.Retry) else None
    with ctx.sessions() as session:
        notifications.settle(
            session,
            item.send_id,
            status="pending" if retry_at else outcome,
            attempts=item.attempts + 1,
            http_status=status,
            error=error,
            now=now,
            retry_at=retry_at,
        )
        session.commit()
    metrics.count_notification(item.target, item.type, outcome)
    fields = {"target": item.target, "type": item.type, "send_id": item.send_id}
    if isinstance(plan, policy.GiveUp):
        log.error("notification not sent", reason=plan.reason, status=status, error=error, **fields)
    elif retry_at:
        log.warning("notification failed, retrying", status=status, error=error, **fields)
    else:
        log.info("notification sent", attempts=item.attempts + 1, **fields)
    return outcome
