"""The retry policy of a notification send (workers/notifications/policy.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from relay.config.notifications import NotificationSettings
from workers.notifications.policy import GiveUp, Retry, Sent, is_retryable, plan_after_send

NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
SETTINGS = NotificationSettings(max_attempts=4, retry_schedule_seconds=(10.0, 100.0))


@pytest.mark.parametrize("status", [200, 202, 204])
def test_a_2xx_is_sent(status: int) -> None:
    assert plan_after_send(status, 1, NOW, SETTINGS) == Sent()


@pytest.mark.parametrize("status", [None, 500, 502, 503, 504, 408, 429])
def test_transient_failures_are_retried(status: int | None) -> None:
    assert is_retryable(status)
    plan = plan_after_send(status, 1, NOW, SETTINGS)
    assert isinstance(plan, Retry)
    assert NOW + dt.timedelta(seconds=8) <= plan.at <= NOW + dt.timedelta(seconds=12)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 301])
def test_other_answers_are_final(status: int) -> None:
    assert not is_retryable(status)
    assert plan_after_send(status, 1, NOW, SETTINGS) == GiveUp("refused")


def test_the_waits_follow_the_schedule_and_the_last_repeats() -> None:
    for attempts, wait in [(2, 100.0), (3, 100.0)]:
        plan = plan_after_send(503, attempts, NOW, SETTINGS)
        assert isinstance(plan, Retry)
        seconds = (plan.at - NOW).total_seconds()
        assert wait * 0.8 <= seconds <= wait * 1.2


def test_it_gives_up_after_max_attempts() -> None:
    assert plan_after_send(None, 4, NOW, SETTINGS) == GiveUp("exhausted")
    assert plan_after_send(200, 4, NOW, SETTINGS) == Sent()  # the last try may still succeed
