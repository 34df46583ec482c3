"""What read-back verification needs, once per process: the ledger's sessions, a reader per
verifiable destination (behind its share of the shared rate limit), each destination's drift
policy, and the settings."""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from relay.config.settings import DestinationSettings, Settings, VerificationSettings
from relay.ledger.models import utcnow
from relay.ledger.verifications import verifiable
from workers.delivery.contact import DeliveryContext, calls_per_write
from workers.delivery.context import delivery_context
from workers.delivery.writers import CLIENTS
from workers.destinations.reading import ConsentReader
from workers.ratelimit.pace import Throttle


@dataclass
class VerificationContext:
    sessions: sessionmaker[Session]
    readers: Mapping[str, ConsentReader]
    policies: Mapping[str, str]  # destination -> repair | report
    settings: VerificationSettings
    # Read-backs one sweep may enqueue per destination: what its share allows until the next.
    budgets: Mapping[str, int] = field(default_factory=dict)
    redispatch_after_seconds: float = 30.0
    clock: Callable[[], dt.datetime] = utcnow


def build_reader(settings: DestinationSettings, throttle: Throttle) -> ConsentReader:
    reader: ConsentReader = CLIENTS[settings.kind](settings, throttle=throttle)  # type: ignore[assignment]
    return reader


def budgets(settings: Settings) -> dict[str, int]:
    interval = max(settings.delivery.sweep_interval_seconds, 1.0)
    return {
        name: max(1, math.ceil(dest.rate_limit_per_second * dest.verify_share * interval))
        for name, dest in settings.destinations.items()
        if verifiable(dest)
    }


_contexts: dict[tuple[int, int], VerificationContext] = {}


def verification_context(app: Celery) -> VerificationContext:
    """One context per process (keyed by pid: prefork children must not share connections)."""
    key = (os.getpid(), id(app))
    if key not in _contexts:
        settings: Settings = app.conf.consent_relay_settings
        delivery = delivery_context(app)  # its sessions and its shared limiter
        readers = {
            name: build_reader(dest, _throttle(delivery, name, dest))
            for name, dest in settings.destinations.items()
            if verifiable(dest)
        }
        policies = {name: dest.verify_policy for name, dest in settings.destinations.items()}
        _contexts[key] = VerificationContext(
            delivery.sessions,
            readers,
            policies,
            settings.verification,
            budgets(settings),
            settings.delivery.redispatch_after_seconds,
        )
    return _contexts[key]


def _throttle(delivery: DeliveryContext, name: str, dest: DestinationSettings) -> Throttle:
    """`verify_share` of the destination's shared pace, a read costing what a write does."""
    assert delivery.limiter is not None, "delivery_context builds the shared limiter"
    calls = calls_per_write(delivery.writers[name])
    return delivery.limiter.for_verification(name, dest.verify_share, calls)
