"""Per-destination request pacing, shared by every worker process on every machine.

Engage allows about 10 transactions per second per account; going over answers HTTP 500
"Database Access Limit Exceeded" with no Retry-After (docs/reference/engage.md#rate-limits). The
limit is per account, so all Celery worker processes on all machines must share one pace: the state
lives in Redis when the broker is Redis, else in the ledger's `rate_limits` table
(workers/ratelimit/backends.py).

The algorithm is GCRA ("theoretical arrival time") without a burst allowance: each request
reserves the next free slot, and slots are one interval apart, so any one-second window holds
at most about `rate` requests. A caller that would wait longer than `max_wait` reserves
nothing and gets ThrottledError: the delivery loop defers the write instead of holding a
worker (schemas/config.py MAX_RATE_LIMIT_WAIT_SECONDS).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Protocol

from relay.config.settings import DestinationSettings
from relay.errors import RelayError
from schemas.config import MAX_RATE_LIMIT_WAIT_SECONDS

# Engage's guide: retry a 5xx after at least 30 s (docs/reference/engage.md#rate-limits). For that
# long after a "Database Access Limit Exceeded" the pace is halved: something else may share the
# account.
PENALTY_SECONDS = 30.0
# A refused reservation tells the caller when to try again; never further out than this, so
# that a very slow configured rate does not park a write for minutes on a stale estimate.
MAX_RETRY_IN_SECONDS = 60.0


# The first call of a write never waits longer than this for its slot: a worker process must
# not sit idle for seconds while other destinations have work (one destination's pace must
# not set another's). A refused write reserves nothing and is deferred to when its slot is
# near (workers/delivery.py `record_throttled`, then the sweeper).
ENTRY_WAIT_SECONDS = 0.5


@dataclass
class _WriteBudget:
    entry_wait: float
    calls: int  # calls the write is expected to make, paid for at its first call
    prepaid: int = 0


_write: ContextVar[_WriteBudget | None] = ContextVar("rate_limit_write", default=None)


@contextlib.contextmanager
def one_write(calls: int = 1, entry_wait: float = ENTRY_WAIT_SECONDS) -> Iterator[None]:
    """Around one write of `calls` calls: its first acquire() reserves all of them at once
    (`calls` intervals of the pace) and waits at most `entry_wait`; the next `calls - 1`
    acquires are already paid for and go at once. So a write of two calls (Dotdigital's
    look-up, then its update) never holds a worker process for an interval between them,
    and the destination's average pace is unchanged. Calls beyond `calls` (Engage's create
    after an update found no contact) reserve as usual."""
    token = _write.set(_WriteBudget(entry_wait, max(calls, 1)))
    try:
        yield
    finally:
        _write.reset(token)


class ThrottledError(RelayError):
    """No slot within `max_wait` (or the shared limiter is unreachable): nothing was sent and
    nothing was reserved. Not a DeliveryError: the write was not attempted; retry after
    `retry_in` seconds."""

    outcome = "throttled"

    def __init__(self, destination: str, retry_in: float, reason: str):
        super().__init__(f"{destination}: {reason}; retry in {retry_in:.2f}s")
        self.destination = destination
        self.retry_in = retry_in


def refusal(destination: str, wait: float) -> ThrottledError:
    """The error for a slot further away than `max_wait`; the caller retries after it."""
    return ThrottledError(
        destination, min(wait, MAX_RETRY_IN_SECONDS), f"next slot is {wait:.2f}s away"
    )


@dataclass(frozen=True)
class Pace:
    """How one destination is paced. `interval` is the spacing between request starts."""

    interval: float
    max_wait: float = MAX_RATE_LIMIT_WAIT_SECONDS
    penalty_seconds: float = PENALTY_SECONDS

    @classmethod
    def for_rate(
        cls, per_second: float, headroom: float = 0.0, *, max_wait: float | None = None
    ) -> Pace:
        # Headroom paces slightly under the vendor's limit so jitter cannot push us over it.
        interval = 1.0 / (per_second * (1.0 - headroom))
        return cls(interval, MAX_RATE_LIMIT_WAIT_SECONDS if max_wait is None else max_wait)

    @classmethod
    def from_settings(cls, destination: DestinationSettings) -> Pace:
        return cls.for_rate(destination.rate_limit_per_second, destination.rate_limit_headroom)


@dataclass(frozen=True)
class Reservation:
    """A reserved slot: `slot` is the start time on the backend's clock (epoch seconds),
    `wait` how long the caller sleeps before sending."""

    slot: float
    wait: float


def plan_slot(
    destination: str, next_slot: float, penalty_until: float, now: float, pace: Pace
) -> tuple[Reservation, float]:
    """One GCRA step: the reservation and the new `next_slot`, or ThrottledError.

    The Redis backend runs the same arithmetic in Lua (ratelimit_backends.RESERVE_LUA).
    If the shared clock steps back, reservations made before are still honoured: writes are
    deferred for up to the size of the step, which errs on the side of Engage's limit."""
    slot = max(next_slot, now)
    wait = slot - now
    if wait > pace.max_wait:
        raise refusal(destination, wait)
    # After the destination said "over the limit", half rate until the penalty ends.
    step = pace.interval * (2.0 if slot < penalty_until else 1.0)
    return Reservation(slot, wait), slot + step


class Backend(Protocol):
    """Where the shared pacing state lives; each call is one atomic read-compute-write."""

    def reserve(self, destination: str, pace: Pace) -> Reservation: ...

    def penalise(self, destination: str, seconds: float) -> None: ...


class Throttle(Protocol):
    """The shared rate limit of one destination, as a destination client holds it: the one
    protocol (DestinationThrottle, or NoLimit where there is no limit)."""

    def acquire(self) -> object: ...

    def slow_down(self) -> None: ...


class DestinationThrottle:
    """The handle a destination client holds: `acquire()` before each HTTP request,
    `slow_down()` when the destination answered "rate limited"."""

    def __init__(
        self,
        backend: Backend,
        destination: str,
        pace: Pace,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.backend = backend
        self.destination = destination
        self.pace = pace
        self._sleep = sleep

    def acquire(self) -> Reservation:
        """Reserve the next slot and sleep until it; raise ThrottledError if it is too far.

        The sleep happens here, after the backend's transaction or script has finished, so
        nothing is held locked while waiting."""
        budget = _write.get()
        if budget is not None and budget.prepaid > 0:
            budget.prepaid -= 1  # reserved with the write's first call
            return Reservation(time.time(), 0.0)
        reservation = self.backend.reserve(self.destination, self._pace_for_this_call(budget))
        if reservation.wait > 0:
            self._sleep(reservation.wait)
        return reservation

    def _pace_for_this_call(self, budget: _WriteBudget | None) -> Pace:
        if budget is None or budget.calls == 0:
            return self.pace
        calls, budget.calls = budget.calls, 0  # only the write's first call
        budget.prepaid = calls - 1
        interval = self.pace.interval * calls
        return replace(
            self.pace, interval=interval, max_wait=min(budget.entry_wait, self.pace.max_wait)
        )

    def slow_down(self) -> None:
        self.backend.penalise(self.destination, self.pace.penalty_seconds)


# The suffix of the key that counts a destination's read-backs (workers/verification/).
VERIFY_KEY_SUFFIX = ":verify"


class ShareThrottle:
    """Read-back verification's handle on a destination's pace: each read takes slots of the
    destination's own shared pace (so reads and writes together never exceed the vendor's
    limit), and at most `share` of that pace (a second GCRA state, `<key>:verify`). A read
    never waits for its share: when it is spent the read is refused (ThrottledError) and
    tried at a later sweep; nothing was reserved on the shared pace then.

    A read reserves as many intervals as one write of the destination takes (`calls`):
    a write's calls go together at the start of its reservation (`one_write`), so slots
    handed out in other sizes could bunch more calls than the pace into one second."""

    def __init__(
        self,
        backend: Backend,
        destination: str,
        pace: Pace,
        share: float,
        sleep: Callable[[float], None] = time.sleep,
        calls: int = 1,
    ):
        if not 0 < share <= 1:
            raise ValueError(f"verification share must be in (0, 1], not {share}")
        self.backend = backend
        self.destination = destination
        step = pace.interval * max(calls, 1)
        self.pace = replace(pace, interval=step, max_wait=min(ENTRY_WAIT_SECONDS, pace.max_wait))
        self.share_pace = Pace(step / share, max_wait=0.0)
        self._sleep = sleep

    def acquire(self) -> Reservation:
        self.backend.reserve(self.destination + VERIFY_KEY_SUFFIX, self.share_pace)
        reservation = self.backend.reserve(self.destination, self.pace)
        if reservation.wait > 0:
            self._sleep(reservation.wait)
        return reservation

    def slow_down(self) -> None:
        self.backend.penalise(self.destination, self.pace.penalty_seconds)


class NoLimit:
    """A throttle that never waits: for destinations and tests without a rate limit."""

    def acquire(self) -> Reservation:
        return Reservation(time.time(), 0.0)

    def slow_down(self) -> None:
        return None


class RateLimiter:
    """The paces of all configured destinations over one shared backend. `keys` maps a
    destination to the key of its shared pace state (workers/ratelimit/keys.py); without
    one, the destination's name is its key."""

    def __init__(
        self,
        backend: Backend,
        paces: Mapping[str, Pace],
        sleep: Callable[[float], None] = time.sleep,
        keys: Mapping[str, str] | None = None,
    ):
        self.backend = backend
        self.paces = dict(paces)
        self.keys = dict(keys or {})
        self._sleep = sleep

    def for_destination(self, name: str) -> DestinationThrottle:
        if name not in self.paces:
            raise KeyError(f"no rate limit configured for destination {name!r}")
        return DestinationThrottle(self.backend, self.key_for(name), self.paces[name], self._sleep)

    def for_verification(self, name: str, share: float, calls: int = 1) -> ShareThrottle:
        """The read-backs' throttle of a destination: `share` of its pace, within it; each
        read reserves `calls` intervals, as one write of the destination does."""
        if name not in self.paces:
            raise KeyError(f"no rate limit configured for destination {name!r}")
        key = self.key_for(name)
        return ShareThrottle(self.backend, key, self.paces[name], share, self._sleep, calls)

    def key_for(self, name: str) -> str:
        """The key of the destination's shared pace state (its name when it has none)."""
        return self.keys.get(name, name)
