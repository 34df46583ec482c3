"""One delivery context per process: the ledger's sessions, a writer per destination (each
behind the shared rate limiter) and the delivery settings."""

from __future__ import annotations

import math
import os

from celery import Celery

from relay.config.settings import Settings
from relay.ledger.runtime import LedgerRuntime
from workers.delivery.contact import DeliveryContext
from workers.delivery.writers import build_writer
from workers.ratelimit.backends import build_rate_limiter

_contexts: dict[tuple[int, int], DeliveryContext] = {}


def sweep_budgets(settings: Settings) -> dict[str, int]:
    """Contacts per sweep for each destination: what its pace delivers in two sweep intervals
    (a contact may take two calls; the margin keeps the destination busy between sweeps)."""
    interval = max(settings.delivery.sweep_interval_seconds, 1.0)
    return {
        name: max(1, math.ceil(dest.rate_limit_per_second * interval * 2))
        for name, dest in settings.destinations.items()
    }


def delivery_context(app: Celery) -> DeliveryContext:
    """One context per process (keyed by pid: prefork children must not share connections)."""
    key = (os.getpid(), id(app))
    if key not in _contexts:
        settings: Settings = app.conf.consent_relay_settings
        runtime = LedgerRuntime.build(settings)
        limiter = build_rate_limiter(settings, runtime.engine)
        writers = {
            name: build_writer(dest, limiter.for_destination(name))
            for name, dest in settings.destinations.items()
        }
        budgets = sweep_budgets(settings)
        _contexts[key] = DeliveryContext(
            runtime.sessions, writers, settings.delivery, sweep_budgets=budgets, limiter=limiter
        )
    return _contexts[key]
