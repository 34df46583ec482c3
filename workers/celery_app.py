"""The workers' Celery application: the client configuration (relay/messaging/client.py)
with the delivery tasks registered on it."""

from __future__ import annotations

from celery import Celery

import workers.tasks  # noqa: F401 - registers the shared tasks
from relay.config.settings import Settings
from relay.messaging.client import create_celery_client


def create_celery_app(settings: Settings) -> Celery:
    app = create_celery_client(settings)
    # Our prefork pool reports a lost child within 0.25 s, not at Celery's 5 s maintenance
    # pass (workers/lost.py); `celery worker` takes the pool from here (the Procfile gives none).
    app.conf.worker_pool = "workers.lost:PromptTaskPool"
    return app
