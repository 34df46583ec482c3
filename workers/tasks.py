"""Celery tasks: thin shells over `workers.delivery.contact` and `workers.delivery.sweeper`.

Tasks carry ids only (destination name, contact id): no e-mail address in the broker or Flower.
Retry and ack policy is declared here; long retries live in the ledger, not in the broker.
Each task run is a span (relay/telemetry/tracing.py), continuing the trace its message carries.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task
from opentelemetry.trace import SpanKind

from relay.ledger import retention
from relay.messaging.lanes import delivery_queue, verify_queue
from relay.messaging.messages import delivery_message
from relay.messaging.names import (
    DELIVER_BATCH_TASK,
    DELIVER_TASK,
    DISPATCH_TASK,
    ERASE_AT_DESTINATION_TASK,
    NOTIFY_TASK,
    PROBE_TASK,
    PRUNE_TASK,
    REQUEST_ID_TASK_HEADER,
    SWEEP_TASK,
    VERIFY_TASK,
)
from relay.telemetry import tracing
from relay.telemetry.logs import get_logger, task_context
from workers.delivery.batch import deliver_batch
from workers.delivery.contact import Requeue, deliver_contact
from workers.delivery.context import delivery_context
from workers.delivery.fanout import fan_out
from workers.delivery.sweeper import probe_destination, schedule_probes, sweep
from workers.erasure.forward import (
    erase_at_destination,
    erasure_context,
    schedule_destination_erasures,
)
from workers.lost import LeaseFreeingRequest, lease_owner
from workers.notifications.send import (
    notification_context,
    schedule_notifications,
    send_notification,
)
from workers.verification.context import verification_context
from workers.verification.readback import verify_contacts
from workers.verification.schedule import schedule_verifications

log = get_logger(__name__)
BUSY_RETRY_SECONDS = 1
BUSY_MAX_RETRIES = 10


@shared_task(
    bind=True,
    name=DELIVER_TASK,
    acks_late=True,
    max_retries=BUSY_MAX_RETRIES,
    ignore_result=True,
    Request=LeaseFreeingRequest,
)
def deliver_contact_task(self: Any, destination: str, contact_id: int) -> str:
    owner = _owner(self.request)
    context = {"destination": destination, "contact_id": contact_id}
    with (
        task_context(task_id=self.request.id, request_id=_request_id(self.request), **context),
        _task_span(self.request, DELIVER_TASK, context) as span,
    ):
        ctx = delivery_context(self.app)
        if destination not in ctx.writers:
            log.error("unknown destination (configuration changed?)")
            return "unknown_destination"
        requeue = _requeue(self, destination, contact_id)
        outcome = deliver_contact(ctx, destination, contact_id, owner, requeue)
        tracing.annotate(span, {"consent_relay.outcome": outcome})
        if outcome == "busy" and self.request.retries < BUSY_MAX_RETRIES:
            # Another task holds this contact; it re-checks for newer decisions before it lets
            # go, so a short retry is enough (and the sweeper is the backstop).
            raise self.retry(countdown=BUSY_RETRY_SECONDS)
        log.info("delivery task done", outcome=outcome)
        return outcome


def _requeue(task: Any, destination: str, contact_id: int) -> Requeue:
    """Sends this contact's task again at its turn (workers/ratelimit/turns.py), carrying the
    same request id and trace; a failed send leaves the contact to the sweeper."""

    def requeue(countdown: float, urgent: bool) -> bool:
        base = task.app.conf.task_default_queue
        request_id, trace = _request_id(task.request), _header(task.request, tracing.TRACEPARENT)
        name, args, headers, queue = delivery_message(
            base, destination, contact_id, request_id, urgent, trace=trace
        )
        try:
            task.app.send_task(name, args=args, headers=headers, queue=queue, countdown=countdown)
        except Exception as exc:  # noqa: BLE001 - the ledger keeps it due; the sweeper sends it
            log.warning("could not requeue a throttled delivery", error=type(exc).__name__)
            return False
        return True

    return requeue


def _owner(request: Any) -> str:
    """This run's lease owner (workers/lost.py frees its leases if the process dies)."""
    return lease_owner(request.id or str(uuid.uuid4()), int(request.retries or 0))


def _request_id(request: Any) -> str | None:
    """The intake request that enqueued the task (a message header; none from the sweeper)."""
    return _header(request, REQUEST_ID_TASK_HEADER)


def _header(request: Any, name: str) -> str | None:
    value = (getattr(request, "headers", None) or {}).get(name)
    value = value or getattr(request, name, None)
    return value if isinstance(value, str) else None


def _task_span(request: Any, name: str, context: dict[str, Any]) -> Any:
    """This run's span: a child of the message's `traceparent` (none: a trace of its own)."""
    attributes = {f"consent_relay.{key}": value for key, value in context.items()}
    parent = _header(request, tracing.TRACEPARENT)
    return tracing.span(name, kind=SpanKind.CONSUMER, parent=parent, attributes=attributes)


@shared_task(bind=True, name=DISPATCH_TASK, acks_late=True, ignore_result=True)
def dispatch_task(self: Any, deliveries: list[list[Any]]) -> int:
    """One delivery task per entry (workers/delivery/fanout.py). Re-run after a lost worker, it
    publishes them again: harmless, delivery is state-based and leased."""
    with task_context(task_id=self.request.id):
        with self.app.producer_or_acquire() as producer:

            def publish(
                destination: str, contact_id: int, request_id: str | None, trace: str | None
            ) -> None:
                base = self.app.conf.task_default_queue
                name, args, headers, queue = delivery_message(
                    base, destination, contact_id, request_id, trace=trace
                )
                self.app.send_task(name, args=args, headers=headers, queue=queue, producer=producer)

            count = fan_out(deliveries, publish)
        log.info("dispatched", count=count)
        return count


@shared_task(bind=True, name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_outbox_task(self: Any) -> int:
    with task_context(task_id=self.request.id):
        ctx = delivery_context(self.app)

        base = self.app.conf.task_default_queue

        def publish(destination: str, contact_id: int, urgent: bool) -> None:
            queue = delivery_queue(base, destination, urgent)
            self.app.send_task(DELIVER_TASK, args=[destination, contact_id], queue=queue)

        def publish_batch(destination: str, contact_ids: list[int], urgent: bool) -> None:
            queue = delivery_queue(base, destination, urgent)
            self.app.send_task(DELIVER_BATCH_TASK, args=[destination, contact_ids], queue=queue)

        def publish_probe(destination: str) -> None:
            self.app.send_task(PROBE_TASK, args=[destination])

        def publish_reads(destination: str, contact_ids: list[int]) -> None:
            self.app.send_task(
                VERIFY_TASK, args=[destination, contact_ids], queue=verify_queue(base)
            )

        def publish_notification(send_id: int) -> None:
            self.app.send_task(NOTIFY_TASK, args=[send_id])

        def publish_erasure(row_id: int) -> None:
            self.app.send_task(ERASE_AT_DESTINATION_TASK, args=[row_id])

        schedule_probes(ctx, publish_probe)
        swept = sweep(ctx, publish, publish_batch)
        schedule_verifications(verification_context(self.app), publish_reads)
        schedule_notifications(notification_context(self.app), publish_notification)
        schedule_destination_erasures(erasure_context(self.app), publish_erasure)
        return swept


@shared_task(bind=True, name=PRUNE_TASK, acks_late=True, ignore_result=True)
def prune_task(self: Any) -> dict[str, int]:
    """[retention]: remove what is past its retention, in small batches."""
    with task_context(task_id=self.request.id):
        ctx = delivery_context(self.app)
        pruned = retention.prune(ctx.sessions, self.app.conf.consent_relay_settings.retention)
        log.info("pruned", **pruned)
        return pruned


@shared_task(
    bind=True,
    name=DELIVER_BATCH_TASK,
    acks_late=True,
    ignore_result=True,
    Request=LeaseFreeingRequest,
)
def deliver_batch_task(self: Any, destination: str, contact_ids: list[int]) -> dict[str, int]:
    """Many contacts of a batching destination in one call (workers/delivery/batch.py). A contact
    skipped as busy is delivered by its lease holder; anything left is swept again."""
    owner = _owner(self.request)
    context = {"destination": destination, "contacts": len(contact_ids)}
    with (
        task_context(task_id=self.request.id, destination=destination),
        _task_span(self.request, DELIVER_BATCH_TASK, context),
    ):
        ctx = delivery_context(self.app)
        if destination not in ctx.writers:
            log.error("unknown destination (configuration changed?)")
            return {"unknown_destination": len(contact_ids)}
        outcomes = deliver_batch(ctx, destination, contact_ids, owner)
        log.info("delivery batch done", contacts=len(contact_ids), **outcomes)
        return outcomes


@shared_task(bind=True, name=PROBE_TASK, acks_late=True, ignore_result=True)
def probe_destination_task(self: Any, destination: str) -> str:
    with task_context(task_id=self.request.id, destination=destination):
        ctx = delivery_context(self.app)
        if destination not in ctx.writers:
            return "unknown_destination"
        return probe_destination(ctx, destination)


@shared_task(bind=True, name=VERIFY_TASK, acks_late=True, ignore_result=True)
def verify_contacts_task(self: Any, destination: str, contact_ids: list[int]) -> dict[str, int]:
    """Read delivered decisions back (workers/verification/readback.py); a drift under the
    `repair` policy goes back to the normal delivery path through `publish_repair`."""
    context = {"destination": destination, "contacts": len(contact_ids)}
    with (
        task_context(task_id=self.request.id, destination=destination),
        _task_span(self.request, VERIFY_TASK, context),
    ):
        ctx = verification_context(self.app)
        if destination not in ctx.readers:
            return {"unverifiable": len(contact_ids)}
        base = self.app.conf.task_default_queue

        def publish_repair(name: str, contact_id: int, urgent: bool) -> None:
            queue = delivery_queue(base, name, urgent)
            self.app.send_task(DELIVER_TASK, args=[name, contact_id], queue=queue)

        outcomes = verify_contacts(ctx, destination, contact_ids, publish_repair)
        log.info("read-backs done", contacts=len(contact_ids), **outcomes)
        return outcomes


@shared_task(bind=True, name=NOTIFY_TASK, acks_late=True, ignore_result=True)
def send_notification_task(self: Any, send_id: int) -> str:
    """One signed operational webhook (workers/notifications/send.py); a failure waits in the
    ledger for the sweeper, never in the broker."""
    with task_context(task_id=self.request.id, send_id=send_id):
        return send_notification(notification_context(self.app), send_id)


@shared_task(bind=True, name=ERASE_AT_DESTINATION_TASK, acks_late=True, ignore_result=True)
def erase_at_destination_task(self: Any, row_id: int) -> str:
    """Pass an erasure on to one destination (workers/erasure/forward.py); a retry waits in the
    ledger for the sweeper, never in the broker."""
    with task_context(task_id=self.request.id, destination_erasure=row_id):
        return erase_at_destination(erasure_context(self.app), row_id)
