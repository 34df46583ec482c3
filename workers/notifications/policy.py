"""What happens after one try to send a notification: done, try again when, or give up.

Retried: a 5xx, 408 (timeout at the receiver), 429 (slow down), a timeout or a connection
error, each a failure the receiver may recover from; the waits are `[notifications]
retry_schedule_seconds` (the last repeating) with ±20% jitter, as deliveries do
(workers/delivery/policy.py), until `max_attempts` tries. Any other answer (a 4xx: a wrong
secret, a moved URL) is final: retrying cannot change it. Standard Webhooks asks receivers for
a 2xx on success (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from relay.config.notifications import NotificationSettings

JITTER = 0.2
RETRIED_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Sent:
    pass


@dataclass(frozen=True)
class Retry:
    at: dt.datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str  # refused | exhausted


Plan = Sent | Retry | GiveUp


def is_retryable(status: int | None) -> bool:
    """None: no answer (a timeout, a refused or broken connection)."""
    return status is None or status >= 500 or status in RETRIED_STATUSES


def plan_after_send(
    status: int | None, attempts: int, now: dt.datetime, settings: NotificationSettings
) -> Plan:
    """`attempts`: the tries so far, this one included."""
    if status is not None and 200 <= status < 300:
        return Sent()
    if not is_retryable(status):
        return GiveUp("refused")
    if attempts >= settings.max_attempts:
        return GiveUp("exhausted")
    schedule = settings.retry_schedule_seconds
    wait = schedule[min(attempts, len(schedule)) - 1]
    jittered = wait * random.uniform(1 - JITTER, 1 + JITTER)
    return Retry(now + dt.timedelta(seconds=jittered))
