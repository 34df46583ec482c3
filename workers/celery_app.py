"""The workers' Celery application: the client configuration (relay/messaging/client.py)
with the delivery tasks registered on it."""

from __future__ import annotations

from celery import Celery

import workers.tasks  # noqa: F401 - registers the shared tasks
from relay.config.settings import Settings
from relay.messaging.client import create_celery_client


def create_celery_app(settings: Settings) -> Celery:
    return create_celery_client(settings)
