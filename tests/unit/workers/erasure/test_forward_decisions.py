"""The pure decisions of workers/erasure/forward.py: what each classified answer of a delete
call makes of the row, and when a retry is due."""

from __future__ import annotations

import pytest

from relay.config.settings import DeliverySettings
from relay.ledger.destination_erasures import DONE, FAILED, PENDING
from workers.destinations.errors import (
    AuthError,
    DeliveryError,
    MisconfiguredError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from workers.erasure.forward import after_error, answered, retry_delay

SETTINGS = DeliverySettings(retry_schedule_seconds=(10.0, 60.0, 600.0), max_retry_age_seconds=3600)


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ("deleted", (DONE, 200, "deleted")),
        ("absent", (DONE, None, "no such contact at the destination")),
        ("accepted", (DONE, 200, "accepted: the vendor deletes it later")),
    ],
)
def test_every_answer_without_an_error_is_done(found: str, expected: tuple[object, ...]) -> None:
    assert answered(found) == expected


@pytest.mark.parametrize(
    "error", [TransientError("x", status=503), RateLimitedError("x", status=429), AuthError("x")]
)
def test_transient_rate_limited_and_auth_failures_wait_and_retry(error: DeliveryError) -> None:
    decision = after_error(error, attempts=0, age_seconds=5, settings=SETTINGS)
    assert decision.status == PENDING and decision.retry_in_seconds == 10.0
    assert decision.detail.startswith(f"{error.outcome}: ")


@pytest.mark.parametrize("error", [RejectedError("x", status=400), MisconfiguredError("x")])
def test_other_failures_fail_for_good_at_once(error: DeliveryError) -> None:
    decision = after_error(error, attempts=0, age_seconds=5, settings=SETTINGS)
    assert decision.status == FAILED and decision.retry_in_seconds is None
    assert "gave up" not in decision.detail


def test_a_retryable_failure_past_the_max_age_gives_up() -> None:
    decision = after_error(TransientError("x"), attempts=4, age_seconds=3600, settings=SETTINGS)
    assert decision.status == FAILED and decision.retry_in_seconds is None
    assert decision.detail.startswith("gave up after 5 tries; transient: ")


@pytest.mark.parametrize(("attempts", "wait"), [(0, 10.0), (1, 60.0), (2, 600.0), (9, 600.0)])
def test_the_retry_follows_the_schedule_and_stays_on_its_last_step(
    attempts: int, wait: float
) -> None:
    assert retry_delay(attempts, SETTINGS) == wait


def test_the_jitter_draw_scales_the_wait() -> None:
    assert retry_delay(1, SETTINGS, draw=0.8) == pytest.approx(48.0)
    decision = after_error(TransientError("x"), 1, 5, SETTINGS, draw=1.2)
    assert decision.retry_in_seconds == pytest.approx(72.0)
