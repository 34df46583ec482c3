"""Read-back verification's share of a destination's pace (workers/ratelimit/pace.py
ShareThrottle), on each real backend: reads take slots of the shared pace, at most `share`
of them, and a read past its share reserves nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.unit.workers.ratelimit.test_pace import (  # noqa: F401 - the backend fixtures
    T0,
    FakeClock,
    Subject,
    pg_engine,
    redis_namespace,
    subject,
)
from workers.ratelimit.pace import (
    VERIFY_KEY_SUFFIX,
    DestinationThrottle,
    Pace,
    RateLimiter,
    ShareThrottle,
    ThrottledError,
)

TEN = Pace.for_rate(10.0)  # 0.1 s apart


@pytest.fixture
def destination() -> str:
    return f"dest-{uuid.uuid4().hex[:12]}"


def test_a_read_takes_a_slot_of_the_shared_pace(subject: Subject, destination: str) -> None:  # noqa: F811
    clock = FakeClock(T0)
    backend = subject.make(clock)
    reads = ShareThrottle(backend, destination, TEN, 0.1, sleep=lambda _s: None)
    writes = DestinationThrottle(backend, destination, TEN, sleep=lambda _s: None)
    reads.acquire()
    # The write after the read waits one interval: reads and writes share the vendor's limit.
    assert writes.acquire().slot == pytest.approx(T0 + 0.1)
    assert subject.stored(destination)[0] == pytest.approx(T0 + 0.2)


def test_reads_past_their_share_are_refused_and_reserve_nothing(
    subject: Subject,  # noqa: F811
    destination: str,
) -> None:
    clock = FakeClock(T0)
    backend = subject.make(clock)
    reads = ShareThrottle(backend, destination, TEN, 0.1, sleep=lambda _s: None)
    reads.acquire()
    before = subject.stored(destination)
    with pytest.raises(ThrottledError):
        reads.acquire()  # the next read slot is a whole second away (10% of 10/s)
    assert subject.stored(destination) == before  # nothing taken from the writes
    clock.now = T0 + 1.0
    reads.acquire()  # one second later: the share has room again
    assert subject.stored(destination + VERIFY_KEY_SUFFIX)[0] == pytest.approx(T0 + 2.0)


def test_reads_over_ten_seconds_stay_within_their_share(subject: Subject, destination: str) -> None:  # noqa: F811
    clock = FakeClock(T0)
    reads = ShareThrottle(subject.make(clock), destination, TEN, 0.1, sleep=lambda _s: None)
    granted = 0
    for step in range(1000):  # a read tried every 10 ms for 10 s
        clock.now = T0 + step * 0.01
        try:
            reads.acquire()
            granted += 1
        except ThrottledError:
            pass
    assert granted == 10  # 10% of 10/s for 10 s


def test_the_limiter_hands_out_a_share_under_the_destinations_key() -> None:
    limiter = RateLimiter(backend=None, paces={"engage": TEN}, keys={"engage": "acct:x"})  # type: ignore[arg-type]
    throttle = limiter.for_verification("engage", 0.25)
    assert throttle.destination == "acct:x"
    assert throttle.share_pace.interval == pytest.approx(TEN.interval * 4)
    two_calls = limiter.for_verification("engage", 0.25, calls=2)
    assert two_calls.pace.interval == pytest.approx(TEN.interval * 2)  # a write's worth
    assert two_calls.share_pace.interval == pytest.approx(TEN.interval * 8)
    with pytest.raises(ValueError):
        limiter.for_verification("engage", 0.0)
    with pytest.raises(KeyError):
        limiter.for_verification("other", 0.1)
