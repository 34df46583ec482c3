"""What happens after a failed write: retry when, dead-letter, or pause the destination.

The one place where a classified failure (workers/destinations/errors.py) becomes a plan.
Destination clients classify HTTP answers (workers/destinations/engage.py: classify); this
module decides the timing:

- rejected (a 400 other than a missing contact): retried up to `max_rejected_attempts`
  (default 3), waiting `rejected_retry_seconds` then doubling, then dead-lettered;
- not visible yet (NO_SUCH_OBJECT right after a create: Engage persists asynchronously,
  docs/reference/engage.md#endpoints): retried after `not_visible_retry_seconds`, a few times;
- rate limited (Engage's HTTP 500 "Database Access Limit Exceeded",
  docs/reference/engage.md#rate-limits): the shared limiter slows down (the client does that) and
  the write is retried after `rate_limited_retry_seconds`;
- other transient failures (5xx, 408, timeouts, connection errors): `retry_schedule_seconds`
  (5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly) with ±20% jitter, until the decision
  has been failing for `max_retry_age_seconds` (72 h), then dead-lettered;
- auth (401, 403, 417 account expired; a peer's 401/403): the destination is paused; no
  retry is spent;
- not found at a peer (the relay never creates peer contacts): like rejected, then
  dead-lettered as `not_found`;
- misconfigured (a peer lacks the custom field attribute mode writes): dead-lettered at once
  as `misconfigured`, since no retry can define the field.

Every wait lives in the ledger's `next_attempt_at`
(docs/reference/delivery-practice.md#retries-outside-the-broker), never in the broker. Jitter is
±20%, not full jitter, which could retry at once
(docs/reference/delivery-practice.md#celery-at-least-once).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from relay.config.settings import DeliverySettings
from workers.destinations.errors import (
    AuthError,
    DeliveryError,
    MisconfiguredError,
    NotFoundError,
    NotVisibleError,
    RateLimitedError,
    RejectedError,
)

# Past this many tries a contact that stays invisible is treated as an ordinary transient.
NOT_VISIBLE_SHORT_TRIES = 5
JITTER = 0.2


@dataclass(frozen=True)
class Retry:
    at: dt.datetime


@dataclass(frozen=True)
class DeadLetter:
    reason: str  # rejected | not_found | misconfigured | max_age


@dataclass(frozen=True)
class Pause:
    pass


Plan = Retry | DeadLetter | Pause


@dataclass(frozen=True)
class FailureHistory:
    """The failures of the current decision, this one included."""

    attempts: int
    rejections: int
    failing_since: dt.datetime


def plan_after_failure(
    exc: DeliveryError, history: FailureHistory, now: dt.datetime, settings: DeliverySettings
) -> Plan:
    if isinstance(exc, AuthError):
        return Pause()
    if isinstance(exc, MisconfiguredError):
        return DeadLetter("misconfigured")
    if isinstance(exc, RejectedError):
        if history.rejections >= settings.max_rejected_attempts:
            return DeadLetter("not_found" if isinstance(exc, NotFoundError) else "rejected")
        wait = settings.rejected_retry_seconds * 2 ** (history.rejections - 1)
        return Retry(now + _jittered(wait))
    if now - history.failing_since >= dt.timedelta(seconds=settings.max_retry_age_seconds):
        return DeadLetter("max_age")
    return Retry(now + _jittered(transient_wait_seconds(exc, history.attempts, settings)))


def transient_wait_seconds(exc: DeliveryError, attempts: int, settings: DeliverySettings) -> float:
    if isinstance(exc, RateLimitedError):
        return settings.rate_limited_retry_seconds
    if isinstance(exc, NotVisibleError):
        if attempts <= NOT_VISIBLE_SHORT_TRIES:
            return settings.not_visible_retry_seconds
        attempts -= NOT_VISIBLE_SHORT_TRIES  # then the ordinary schedule from its start
    schedule = settings.retry_schedule_seconds
    return schedule[min(attempts, len(schedule)) - 1]


def _jittered(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds * random.uniform(1 - JITTER, 1 + JITTER))
