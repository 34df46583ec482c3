"""The shared rate limiter (workers/ratelimit.py) on its real backends: SQLite, PostgreSQL and
Redis. The arithmetic is checked with an injected clock and a recording sleep (no waiting);
the server clocks are checked with slots ten seconds apart, reserved but not slept for.

The cross-process guarantee is in tests/integration/test_ratelimit_shared.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from relay.config.loader import load_settings, normalise_database_url
from relay.config.settings import DestinationSettings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import RateLimitSlot
from tests.helpers.support import free_port, write_config
from workers.destinations.errors import DeliveryError
from workers.ratelimit.backends import (
    IDLE_TTL_SECONDS,
    REDIS_DOWN_RETRY_SECONDS,
    DatabaseBackend,
    RedisBackend,
    build_rate_limiter,
    redis_client,
)
from workers.ratelimit.pace import (
    MAX_RETRY_IN_SECONDS,
    Backend,
    DestinationThrottle,
    NoLimit,
    Pace,
    RateLimiter,
    ThrottledError,
    one_write,
    plan_slot,
    refusal,
)
from workers.ratelimit.turns import MAX_TURN_AHEAD_SECONDS, take_turn, turn_reach

T0 = 1_800_000_000.0  # a fake epoch time
TEN_PER_SECOND = Pace.for_rate(10.0)  # interval 0.1 s
Clock = Callable[[], float]


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    """One real backend: `make(clock)` builds it (None = its own clock), `stored(destination)`
    reads (next_slot, penalty_until) straight from its storage."""

    make: Callable[[Clock | None], Backend]
    stored: Callable[[str], tuple[float, float]]


def _db_subject(engine: Engine) -> Subject:
    sessions: sessionmaker[Session] = make_session_factory(engine)

    def stored(destination: str) -> tuple[float, float]:
        with sessions() as session:
            row = session.scalars(
                select(RateLimitSlot).where(RateLimitSlot.destination == destination)
            ).one_or_none()
            return (0.0, 0.0) if row is None else (row.next_slot, row.penalty_until)

    return Subject(lambda clock: DatabaseBackend(engine, clock), stored)


def _redis_subject(client: redis.Redis, namespace: str) -> Subject:
    def stored(destination: str) -> tuple[float, float]:
        backend = RedisBackend(client, namespace)
        values = client.mget(
            [backend.key("rate", destination), backend.key("penalty", destination)]
        )
        return (float(values[0] or 0.0), float(values[1] or 0.0))

    return Subject(lambda clock: RedisBackend(client, namespace, clock), stored)


@pytest.fixture(scope="module")
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(normalise_database_url(postgres_url))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A real Redis client and a namespace of its own; its keys are deleted afterwards."""
    client = redis_client(redis_url)
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    yield client, namespace
    keys = list(client.scan_iter(f"consent-relay:{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "sqlite":
        return _db_subject(request.getfixturevalue("ledger").engine)
    if request.param == "postgresql":
        return _db_subject(request.getfixturevalue("pg_engine"))
    client, namespace = request.getfixturevalue("redis_namespace")
    return _redis_subject(client, namespace)


@pytest.fixture
def destination() -> str:
    # The PostgreSQL database is shared by the whole session: one row per test.
    return f"dest-{uuid.uuid4().hex[:12]}"


# --- the GCRA arithmetic itself -------------------------------------------------------------


def test_slots_are_one_interval_apart_at_a_fixed_clock() -> None:
    next_slot, waits = 0.0, []
    for _ in range(5):
        reservation, next_slot = plan_slot("d", next_slot, 0.0, T0, TEN_PER_SECOND)
        waits.append(reservation.wait)
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert next_slot == pytest.approx(T0 + 0.5)


def test_headroom_paces_below_the_configured_rate() -> None:
    settings = DestinationSettings("engage", "mapp-engage", "http://x", "u", "p")
    assert Pace.from_settings(settings).interval == pytest.approx(1 / 9.5)  # 10/s less 5%


def test_refused_wait_is_capped_as_retry_hint() -> None:
    slow = Pace.for_rate(0.01)  # one request per 100 s
    _, next_slot = plan_slot("d", 0.0, 0.0, T0, slow)
    with pytest.raises(ThrottledError) as refused:
        plan_slot("d", next_slot, 0.0, T0, slow)
    assert refused.value.retry_in == MAX_RETRY_IN_SECONDS
    assert refused.value.destination == "d"


def test_throttled_is_not_a_delivery_error() -> None:
    # The delivery loop must read it as "not attempted", never as a failed attempt.
    assert not issubclass(ThrottledError, DeliveryError)


# --- the same behaviour on every backend --------------------------------------------------


def test_waits_grow_by_one_interval_at_a_fixed_clock(subject: Subject, destination: str) -> None:
    sleeps: list[float] = []
    throttle = DestinationThrottle(
        subject.make(FakeClock()), destination, TEN_PER_SECOND, sleeps.append
    )
    reservations = [throttle.acquire() for _ in range(5)]
    assert [r.wait for r in reservations] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-6)
    assert [r.slot - T0 for r in reservations] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4], abs=1e-6)
    assert sleeps == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-6)  # no sleep(0)
    assert subject.stored(destination)[0] == pytest.approx(T0 + 0.5, abs=1e-6)


def test_no_wait_once_the_clock_has_passed(subject: Subject, destination: str) -> None:
    clock, sleeps = FakeClock(), list[float]()
    throttle = DestinationThrottle(subject.make(clock), destination, TEN_PER_SECOND, sleeps.append)
    for _ in range(3):
        throttle.acquire()
    clock.now = T0 + 1.0
    reservation = throttle.acquire()
    assert reservation.wait == 0.0
    assert reservation.slot == pytest.approx(T0 + 1.0, abs=1e-6)
    assert subject.stored(destination)[0] == pytest.approx(T0 + 1.1, abs=1e-6)


def test_sleeping_callers_are_paced_one_interval_apart(subject: Subject, destination: str) -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:  # time passes while a caller waits for its slot
        clock.now += seconds

    throttle = DestinationThrottle(subject.make(clock), destination, TEN_PER_SECOND, sleep)
    starts = []
    for _ in range(4):
        throttle.acquire()
        starts.append(clock.now)
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == pytest.approx(
        [0.1, 0.1, 0.1], abs=1e-6
    )


def test_penalty_halves_the_rate_until_it_expires(subject: Subject, destination: str) -> None:
    clock, sleeps = FakeClock(), list[float]()
    throttle = DestinationThrottle(subject.make(clock), destination, TEN_PER_SECOND, sleeps.append)
    throttle.slow_down()
    assert subject.stored(destination)[1] == pytest.approx(T0 + 30.0, abs=1e-6)
    slots = [throttle.acquire().slot - T0 for _ in range(3)]
    assert slots == pytest.approx([0.0, 0.2, 0.4], abs=1e-6)
    clock.now = T0 + 31.0
    slots = [throttle.acquire().slot - clock.now for _ in range(3)]
    assert slots == pytest.approx([0.0, 0.1, 0.2], abs=1e-6)


def test_a_penalty_is_never_shortened(subject: Subject, destination: str) -> None:
    clock = FakeClock()
    backend = subject.make(clock)
    backend.penalise(destination, 30.0)
    clock.now = T0 + 5.0
    backend.penalise(destination, 10.0)
    assert subject.stored(destination)[1] == pytest.approx(T0 + 30.0, abs=1e-6)


def test_refusal_past_max_wait_reserves_nothing(subject: Subject, destination: str) -> None:
    clock, sleeps = FakeClock(), list[float]()
    throttle = DestinationThrottle(
        subject.make(clock), destination, Pace.for_rate(1.0, max_wait=5.0), sleeps.append
    )
    waits = [throttle.acquire().wait for _ in range(6)]
    assert waits == pytest.approx([0, 1, 2, 3, 4, 5], abs=1e-6)  # exactly max_wait is allowed
    for _ in range(2):  # the second refusal sees the same slot: the first reserved nothing
        with pytest.raises(ThrottledError) as refused:
            throttle.acquire()
        assert refused.value.retry_in == pytest.approx(6.0, abs=1e-6)
    assert subject.stored(destination)[0] == pytest.approx(T0 + 6.0, abs=1e-6)
    assert len(sleeps) == 5
    clock.now = T0 + 1.0
    assert throttle.acquire().slot == pytest.approx(T0 + 6.0, abs=1e-6)


def test_backend_clock_gives_epoch_slots(subject: Subject, destination: str) -> None:
    """No injected clock: Redis TIME, PostgreSQL clock_timestamp(), or time.time() on SQLite.
    Ten seconds between slots, so the reservations (not slept for) cannot outrun the pace."""
    sleeps: list[float] = []
    pace = Pace.for_rate(0.1, max_wait=60.0)
    throttle = DestinationThrottle(subject.make(None), destination, pace, sleeps.append)
    before = time.time()
    reservations = [throttle.acquire() for _ in range(3)]
    first = reservations[0]
    assert first.wait == 0.0
    assert abs(first.slot - before) < 60  # epoch seconds, the same clock as this host's
    assert [r.slot - first.slot for r in reservations] == pytest.approx([0, 10, 20], abs=1e-5)
    for k, reservation in enumerate(reservations[1:], start=1):
        assert 10 * (k - 1) < reservation.wait <= 10 * k
    assert sleeps == [r.wait for r in reservations[1:]]


# --- Redis specifics ------------------------------------------------------------------------


def test_redis_keys_are_namespaced_and_expire(
    redis_namespace: tuple[redis.Redis, str], destination: str
) -> None:
    client, namespace = redis_namespace
    throttle = DestinationThrottle(
        RedisBackend(client, namespace), destination, TEN_PER_SECOND, lambda _: None
    )
    throttle.acquire()
    throttle.slow_down()
    rate_key = f"consent-relay:{namespace}:rate:{destination}"
    penalty_key = f"consent-relay:{namespace}:penalty:{destination}"
    assert 0 < client.pttl(rate_key) <= (IDLE_TTL_SECONDS + 0.1) * 1000 + 1
    assert 0 < client.pttl(penalty_key) <= (IDLE_TTL_SECONDS + 30.0) * 1000 + 1
    other = RedisBackend(client, f"{namespace}-other")  # another deployment on the same Redis
    try:
        assert other.reserve(destination, TEN_PER_SECOND).wait == 0.0
    finally:
        client.delete(other.key("rate", destination))


def test_unreachable_redis_defers_instead_of_sending_unpaced(destination: str) -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    throttle = DestinationThrottle(
        RedisBackend(client, "nowhere"), destination, TEN_PER_SECOND, lambda _: None
    )
    with pytest.raises(ThrottledError) as refused:
        throttle.acquire()
    assert refused.value.retry_in == REDIS_DOWN_RETRY_SECONDS
    throttle.slow_down()  # best effort: must not hide the caller's own rate-limited error


# --- handles and the factory --------------------------------------------------------------


def test_no_limit_never_waits() -> None:
    throttle = NoLimit()
    throttle.slow_down()
    assert [throttle.acquire().wait for _ in range(100)] == [0.0] * 100


def test_limiter_hands_out_configured_destinations_only(ledger: Any) -> None:
    limiter = RateLimiter(DatabaseBackend(ledger.engine), {"engage": TEN_PER_SECOND})
    assert limiter.for_destination("engage").pace == TEN_PER_SECOND
    with pytest.raises(KeyError, match="other"):
        limiter.for_destination("other")


def _settings(tmp_path: Path, broker_url: str, queue: str) -> Any:
    config = write_config(
        tmp_path / "relay.toml",
        data_dir=tmp_path,
        engage_url="http://127.0.0.1:9",
        broker_url=broker_url,
        queue=queue,
    )
    return load_settings(config, environ={})


def test_factory_uses_the_redis_broker(
    tmp_path: Path, ledger: Any, redis_url: str, redis_namespace: tuple[redis.Redis, str]
) -> None:
    client, namespace = redis_namespace
    settings = _settings(tmp_path, redis_url, namespace)
    limiter = build_rate_limiter(settings, ledger.engine, sleep=lambda _: None)
    assert isinstance(limiter.backend, RedisBackend)
    throttle = limiter.for_destination("engage")
    throttle.acquire()
    assert client.exists(f"consent-relay:{namespace}:rate:{throttle.destination}")
    assert _db_subject(ledger.engine).stored(throttle.destination) == (0.0, 0.0)


@pytest.mark.parametrize("broker_url", ["amqp://guest:guest@127.0.0.1:5672//", "filesystem://"])
def test_factory_uses_the_ledger_otherwise(tmp_path: Path, ledger: Any, broker_url: str) -> None:
    sleeps: list[float] = []
    settings = _settings(tmp_path, broker_url, "relay")
    limiter = build_rate_limiter(settings, ledger.engine, sleep=sleeps.append)
    assert isinstance(limiter.backend, DatabaseBackend)
    throttle = limiter.for_destination("engage")
    first, second = throttle.acquire(), throttle.acquire()
    # 10/s less the default 5% headroom: slots 1/9.5 s apart, in the ledger's rate_limits row.
    assert second.slot - first.slot == pytest.approx(1 / 9.5, abs=1e-6)
    next_slot, _ = _db_subject(ledger.engine).stored(throttle.destination)
    assert next_slot == pytest.approx(second.slot + 1 / 9.5, abs=1e-6)


# --- one write: the first call waits briefly and pays for the write's calls ------------------


def test_a_writes_first_call_waits_briefly_and_reserves_nothing_when_refused(
    subject: Subject, destination: str
) -> None:
    clock, sleeps = FakeClock(), list[float]()
    throttle = DestinationThrottle(
        subject.make(clock), destination, Pace.for_rate(1.0, max_wait=5.0), sleeps.append
    )
    throttle.acquire()  # someone else's call: the next slot is 1 s away
    with one_write(calls=1, entry_wait=0.5), pytest.raises(ThrottledError) as refused:
        throttle.acquire()
    assert refused.value.retry_in == pytest.approx(1.0, abs=1e-6)
    assert subject.stored(destination)[0] == pytest.approx(T0 + 1.0, abs=1e-6)  # unchanged
    assert sleeps == []  # no worker process sat waiting
    assert throttle.acquire().wait == pytest.approx(1.0, abs=1e-6)  # outside a write: as before


def test_a_write_of_two_calls_reserves_both_with_its_first(
    subject: Subject, destination: str
) -> None:
    clock, sleeps = FakeClock(), list[float]()
    throttle = DestinationThrottle(
        subject.make(clock), destination, Pace.for_rate(1.0, max_wait=5.0), sleeps.append
    )
    with one_write(calls=2, entry_wait=0.5):
        first, second = throttle.acquire(), throttle.acquire()
        assert (first.wait, second.wait) == (0.0, 0.0)  # the update goes right after its look-up
        third = throttle.acquire()  # a call beyond the expected two reserves as usual
    assert third.wait == pytest.approx(2.0, abs=1e-6)
    assert subject.stored(destination)[0] == pytest.approx(T0 + 3.0, abs=1e-6)  # pace kept
    assert sleeps == [pytest.approx(2.0, abs=1e-6)]


# --- turns: when a refused write comes back (workers/ratelimit/turns.py) ------------------


def test_refused_writes_get_turns_one_write_apart_and_reserve_no_slot(
    subject: Subject, destination: str
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(subject.make(clock), {destination: Pace.for_rate(2.0)}, lambda _: None)
    refused = refusal(destination, 1.25)
    turns = [take_turn(limiter, destination, 2, refused, urgent=False) for _ in range(3)]
    # A write of two calls at 2 calls/s: one turn a second, counted from the refused slot.
    assert turns == [pytest.approx(1.25), pytest.approx(2.25), pytest.approx(3.25)]
    assert take_turn(limiter, destination, 2, refused, urgent=True) == pytest.approx(1.25)
    assert subject.stored(destination) == (0.0, 0.0)  # the pace itself: untouched
    clock.now += 10  # the turns drain with time
    assert take_turn(limiter, destination, 2, refused, urgent=False) == pytest.approx(1.25)


def test_turns_reach_only_so_far_ahead(subject: Subject, destination: str) -> None:
    limiter = RateLimiter(subject.make(FakeClock()), {destination: Pace.for_rate(1.0)})
    refused = refusal(destination, 0.6)
    turns = [take_turn(limiter, destination, 1, refused, urgent=False) for _ in range(21)]
    assert turns[:20] == [pytest.approx(0.6 + i) for i in range(20)]
    assert turns[20] is None  # 20.6 s away: past MAX_TURN_AHEAD_SECONDS, the sweeper's
    assert MAX_TURN_AHEAD_SECONDS == 20.0


def test_turns_stay_within_half_the_redispatch_period(subject: Subject, destination: str) -> None:
    """The sweeper leaves a requeued contact alone for `redispatch_after_seconds`: its own
    message must come back well before that, or the contact would be sent twice."""
    limiter = RateLimiter(subject.make(FakeClock()), {destination: Pace.for_rate(1.0)})
    reach, refused = turn_reach(redispatch_after_seconds=4.0), refusal(destination, 0.6)
    assert reach == 2.0
    assert take_turn(limiter, destination, 1, refused, False, reach) == pytest.approx(0.6)
    assert take_turn(limiter, destination, 1, refused, False, reach) == pytest.approx(1.6)
    assert take_turn(limiter, destination, 1, refused, False, reach) is None  # 2.6 s away
    assert take_turn(limiter, destination, 1, refusal(destination, 2.5), True, reach) is None


def test_no_turn_when_redis_is_unreachable(destination: str) -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RateLimiter(RedisBackend(client, "nowhere"), {destination: TEN_PER_SECOND})
    refused = ThrottledError(destination, REDIS_DOWN_RETRY_SECONDS, "rate limiter unavailable")
    assert take_turn(limiter, destination, 1, refused, urgent=True) is None
    assert take_turn(limiter, "not-configured", 1, refusal(destination, 1.0), urgent=False) is None
