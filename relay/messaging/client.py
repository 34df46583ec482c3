"""The Celery *client* configuration, from Settings (Flask's "Celery background tasks" pattern).

At-least-once settings follow docs/reference/delivery-practice.md#celery-at-least-once and
docs/reference/delivery-practice.md#celery-settings: late acks, prefetch 1, publisher confirms on
RabbitMQ, re-queue on a lost worker (RabbitMQ only: Redis has no redelivered flag). Long waits never
live in the broker: the sweeper re-enqueues due work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from relay.config.settings import Settings
from relay.messaging.lanes import delivery_lanes, recovery_queue, verify_queue
from relay.messaging.names import PRUNE_TASK, SWEEP_TASK

EMBEDDED_TRANSPORT = "relay.messaging.embedded_broker:Transport"


def broker_kind(broker_url: str) -> str:
    scheme = broker_url.split("://", 1)[0].split("+", 1)[0]
    return {"amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp", "rediss": "redis"}.get(
        scheme, scheme
    )


def transport_options(settings: Settings) -> dict[str, Any]:
    kind = broker_kind(settings.broker_url)
    if kind == "amqp":
        # "Without this, messages can be silently dropped when the broker hits resource limits."
        return {"confirm_publish": True}
    if kind == "redis":
        # Tasks are short (bounded by the lease); an hour covers any run without re-delivery.
        return {"visibility_timeout": 3600}
    if kind == "filesystem":
        # The embedded default broker: no server needed (relay/messaging/embedded_broker.py). It can
        # lose a message on a crash (docs/reference/delivery-practice.md#embedded-brokers); the
        # ledger's sweeper makes that harmless.
        folder = Path(settings.data_dir, "broker").resolve()
        for sub in ("processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            # Broadcast (control) exchanges, else kombu writes ./control in the working dir.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # How often a consumer looks for new message files (a directory listing).
            "polling_interval": 0.05,
        }
    return {}


def _queue(name: str) -> Queue:
    # Each queue with a direct exchange of its own name, as Celery declares its default queue.
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def create_celery_client(settings: Settings) -> Celery:
    """Broker, queues and schedule: what the web and the CLI need to publish by task name,
    and what the workers' app (workers/celery_app.py) adds its tasks to."""
    app = Celery("consent_relay", set_as_current=False)
    # beat keeps its schedule file in data_dir, whatever the broker.
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    kind = broker_kind(settings.broker_url)
    lanes = delivery_lanes(settings.queue, settings.destinations)
    hard_limit = max(settings.delivery.lease_seconds - 15, 5)
    app.conf.update(
        broker_url=settings.broker_url,
        # The embedded broker: kombu's filesystem transport, atomic and on the event loop.
        broker_transport=EMBEDDED_TRANSPORT if kind == "filesystem" else None,
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_default_queue=settings.queue,
        # The base queue (sweeps, probes, dispatch), two lanes per destination, the lost
        # runs' queue and the read-backs' (relay/messaging/lanes.py); a worker consumes them
        # all, in turn.
        task_queues=[
            _queue(name)
            for name in (
                settings.queue,
                *lanes,
                recovery_queue(settings.queue),
                verify_queue(settings.queue),
            )
        ],
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=kind == "amqp",
        worker_prefetch_multiplier=1,
        # How long billiard waits for a result from a pool process that died before it calls
        # the run lost (default 10 s). Results are ignored here, so there is nothing to wait
        # for; the lost run's leases are freed then (workers/lost.py).
        worker_lost_wait=1.0,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A task must end before its lease can expire, so two writers never overlap.
        task_time_limit=hard_limit,
        task_soft_time_limit=max(hard_limit - 5, 1),
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-outbox": {
                "task": SWEEP_TASK,
                "schedule": settings.delivery.sweep_interval_seconds,
                "options": {"expires": max(settings.delivery.sweep_interval_seconds * 2, 2)},
            },
            "prune": {
                "task": PRUNE_TASK,
                "schedule": settings.retention.interval_seconds,
                "options": {"expires": settings.retention.interval_seconds},
            },
        },
        beat_schedule_filename=str(Path(settings.data_dir, "celerybeat-schedule")),
    )
    app.conf.consent_relay_settings = settings
    return app
