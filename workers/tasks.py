"""Celery tasks: thin shells over `workers.delivery` and `workers.sweeper`.

Tasks carry ids only (destination name, contact id): no e-mail address in the broker or Flower.
Retry and ack policy is declared here; long retries live in the ledger, not in the broker.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery import Celery, shared_task

from service.config import Settings
from service.logs import get_logger, task_context
from service.runtime import Runtime
from workers.batch import deliver_batch
from workers.delivery import DeliveryContext, deliver_contact
from workers.dispatch import delivery_message, fan_out
from workers.names import (
    DELIVER_BATCH_TASK,
    DELIVER_TASK,
    DISPATCH_TASK,
    PROBE_TASK,
    REQUEST_ID_TASK_HEADER,
    SWEEP_TASK,
)
from workers.ratelimit import build_rate_limiter
from workers.sweeper import probe_destination, schedule_probes, sweep
from workers.writers import build_writer

log = get_logger(__name__)
_contexts: dict[tuple[int, int], DeliveryContext] = {}
BUSY_RETRY_SECONDS = 1
BUSY_MAX_RETRIES = 10


def delivery_context(app: Celery) -> DeliveryContext:
    """One context per process (keyed by pid: prefork children must not share connections)."""
    key = (os.getpid(), id(app))
    if key not in _contexts:
        settings: Settings = app.conf.consent_relay_settings
        runtime = Runtime.build(settings)
        limiter = build_rate_limiter(settings, runtime.engine)
        writers = {
            name: build_writer(dest, limiter.for_destination(name))
            for name, dest in settings.destinations.items()
        }
        _contexts[key] = DeliveryContext(runtime.sessions, writers, settings.delivery)
    return _contexts[key]


@shared_task(
    bind=True,
    name=DELIVER_TASK,
    acks_late=True,
    max_retries=BUSY_MAX_RETRIES,
    ignore_result=True,
)
def deliver_contact_task(self: Any, destination: str, contact_id: int) -> str:
    owner = self.request.id or str(uuid.uuid4())
    context = {"destination": destination, "contact_id": contact_id}
    with task_context(task_id=owner, request_id=_request_id(self.request), **context):
        ctx = delivery_context(self.app)
        if destination not in ctx.writers:
            log.error("unknown destination (configuration changed?)")
            return "unknown_destination"
        outcome = deliver_contact(ctx, destination, contact_id, owner)
        if outcome == "busy" and self.request.retries < BUSY_MAX_RETRIES:
            # Another task holds this contact; it re-checks for newer decisions before it lets
            # go, so a short retry is enough (and the sweeper is the backstop).
            raise self.retry(countdown=BUSY_RETRY_SECONDS)
        log.info("delivery task done", outcome=outcome)
        return outcome


def _request_id(request: Any) -> str | None:
    """The intake request that enqueued the task (a message header; none from the sweeper)."""
    value = (getattr(request, "headers", None) or {}).get(REQUEST_ID_TASK_HEADER)
    value = value or getattr(request, REQUEST_ID_TASK_HEADER, None)
    return value if isinstance(value, str) else None


@shared_task(bind=True, name=DISPATCH_TASK, acks_late=True, ignore_result=True)
def dispatch_task(self: Any, deliveries: list[list[Any]]) -> int:
    """One delivery task per entry (workers/dispatch.py). Re-run after a lost worker, it
    publishes them again: harmless, delivery is state-based and leased."""
    with task_context(task_id=self.request.id):
        with self.app.producer_or_acquire() as producer:

            def publish(destination: str, contact_id: int, request_id: str | None) -> None:
                name, args, headers = delivery_message(destination, contact_id, request_id)
                self.app.send_task(name, args=args, headers=headers, producer=producer)

            count = fan_out(deliveries, publish)
        log.info("dispatched", count=count)
        return count


@shared_task(bind=True, name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_outbox_task(self: Any) -> int:
    with task_context(task_id=self.request.id):
        ctx = delivery_context(self.app)

        def publish(destination: str, contact_id: int) -> None:
            self.app.send_task(DELIVER_TASK, args=[destination, contact_id])

        def publish_batch(destination: str, contact_ids: list[int]) -> None:
            self.app.send_task(DELIVER_BATCH_TASK, args=[destination, contact_ids])

        def publish_probe(destination: str) -> None:
            self.app.send_task(PROBE_TASK, args=[destination])

        schedule_probes(ctx, publish_probe)
        return sweep(ctx, publish, publish_batch)


@shared_task(bind=True, name=DELIVER_BATCH_TASK, acks_late=True, ignore_result=True)
def deliver_batch_task(self: Any, destination: str, contact_ids: list[int]) -> dict[str, int]:
    """Many contacts of a batching destination in one call (workers/batch.py). A contact
    skipped as busy is delivered by its lease holder; anything left is swept again."""
    owner = self.request.id or str(uuid.uuid4())
    with task_context(task_id=owner, destination=destination):
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
