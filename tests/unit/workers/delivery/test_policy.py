"""The retry policy (`workers.delivery.policy.plan_after_failure`): one plan per classified
failure."""

from __future__ import annotations

import datetime as dt
import statistics

import pytest

from relay.config.settings import DeliverySettings
from workers.delivery.policy import (
    NOT_VISIBLE_SHORT_TRIES,
    DeadLetter,
    FailureHistory,
    Pause,
    Retry,
    plan_after_failure,
)
from workers.destinations.errors import (
    AuthError,
    DeliveryError,
    NotVisibleError,
    RateLimitedError,
    RejectedError,
    TransientError,
)

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
SETTINGS = DeliverySettings()  # the documented defaults


def wait_of(plan: object) -> float:
    assert isinstance(plan, Retry), plan
    return (plan.at - NOW).total_seconds()


def history(attempts: int = 1, rejections: int = 0, age: float = 0.0) -> FailureHistory:
    return FailureHistory(attempts, rejections, NOW - dt.timedelta(seconds=age))


def waits(exc: DeliveryError, attempts: int, samples: int = 300) -> list[float]:
    return [
        wait_of(plan_after_failure(exc, history(attempts), NOW, SETTINGS)) for _ in range(samples)
    ]


@pytest.mark.parametrize("status", [401, 403, 417])
def test_auth_failures_pause_whatever_the_history(status: int) -> None:
    exc = AuthError("refused", status=status)
    assert plan_after_failure(exc, history(), NOW, SETTINGS) == Pause()
    old = history(attempts=50, rejections=2, age=10 * 24 * 3600)
    assert plan_after_failure(exc, old, NOW, SETTINGS) == Pause()


@pytest.mark.parametrize(
    ("attempts", "base"),
    [(1, 5), (2, 30), (3, 120), (4, 600), (5, 1800), (6, 3600), (7, 3600), (40, 3600)],
)
def test_transient_failures_follow_the_schedule_with_jitter(attempts: int, base: float) -> None:
    values = waits(TransientError("502", status=502), attempts)
    assert min(values) >= 0.8 * base
    assert max(values) <= 1.2 * base
    # The jitter is real and spread over the ±20% band, centred on the schedule.
    assert min(values) < 0.9 * base < 1.1 * base < max(values)
    assert statistics.mean(values) == pytest.approx(base, rel=0.05)


def test_each_step_of_the_schedule_waits_longer_than_the_previous() -> None:
    for attempts in range(1, 6):
        later = waits(TransientError("x"), attempts + 1, 100)
        assert min(later) > max(waits(TransientError("x"), attempts, 100))


def test_transient_failures_dead_letter_after_the_max_age() -> None:
    exc = TransientError("timeout")
    limit = SETTINGS.max_retry_age_seconds
    assert isinstance(plan_after_failure(exc, history(9, age=limit - 1), NOW, SETTINGS), Retry)
    assert plan_after_failure(exc, history(9, age=limit), NOW, SETTINGS) == DeadLetter("max_age")


def test_rejected_requests_are_retried_spread_over_minutes_then_dead_lettered() -> None:
    exc = RejectedError("INVALID_PARAMETER", status=400)
    first = [wait_of(plan_after_failure(exc, history(1, 1), NOW, SETTINGS)) for _ in range(100)]
    second = [wait_of(plan_after_failure(exc, history(2, 2), NOW, SETTINGS)) for _ in range(100)]
    assert min(first) >= 48 and max(first) <= 72
    assert min(second) >= 96 and max(second) <= 144
    third = plan_after_failure(exc, history(3, 3), NOW, SETTINGS)
    assert third == DeadLetter("rejected")


def test_the_rejection_cap_is_configurable() -> None:
    settings = DeliverySettings(max_rejected_attempts=1)
    exc = RejectedError("bad", status=400)
    assert plan_after_failure(exc, history(1, 1), NOW, settings) == DeadLetter("rejected")


def test_rejections_count_separately_from_transient_attempts() -> None:
    exc = RejectedError("bad", status=400)
    plan = plan_after_failure(exc, history(attempts=7, rejections=1), NOW, SETTINGS)
    assert 48 <= wait_of(plan) <= 72


def test_rate_limited_retries_soon_and_still_respects_the_max_age() -> None:
    exc = RateLimitedError("Database Access Limit Exceeded", status=500)
    values = [wait_of(plan_after_failure(exc, history(6), NOW, SETTINGS)) for _ in range(100)]
    assert all(8 <= v <= 12 for v in values)
    aged = history(6, age=SETTINGS.max_retry_age_seconds)
    assert plan_after_failure(exc, aged, NOW, SETTINGS) == DeadLetter("max_age")


def test_a_contact_not_yet_visible_is_retried_within_seconds_a_few_times() -> None:
    exc = NotVisibleError("NO_SUCH_OBJECT after create", status=400)
    for attempts in range(1, NOT_VISIBLE_SHORT_TRIES + 1):
        assert all(1.6 <= v <= 2.4 for v in waits(exc, attempts, 50))
    # Still invisible after that: the ordinary schedule, from its first step.
    assert all(4 <= v <= 6 for v in waits(exc, NOT_VISIBLE_SHORT_TRIES + 1, 50))
    assert all(24 <= v <= 36 for v in waits(exc, NOT_VISIBLE_SHORT_TRIES + 2, 50))


def test_a_custom_schedule_repeats_its_last_step() -> None:
    settings = DeliverySettings(retry_schedule_seconds=(1.0, 2.0))
    exc = TransientError("503", status=503)
    for attempts, base in ((1, 1.0), (2, 2.0), (3, 2.0), (30, 2.0)):
        value = wait_of(plan_after_failure(exc, history(attempts), NOW, settings))
        assert 0.8 * base <= value <= 1.2 * base
