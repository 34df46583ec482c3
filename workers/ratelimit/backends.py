"""Where the shared pacing state of workers/ratelimit.py lives: Redis or the ledger database.

Both take one shared clock (Redis `TIME`, PostgreSQL `clock_timestamp()`) so that machines'
clocks do not matter; SQLite is one machine, so `time.time()` is that shared clock. A `clock`
callable can be injected instead (tests of the arithmetic on the real backends).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from relay.config.settings import Settings
from relay.ledger.db import insert_ignoring_conflicts, make_session_factory
from relay.ledger.models import RateLimitSlot
from relay.messaging.client import broker_kind
from workers.ratelimit.keys import limiter_keys, shared_paces
from workers.ratelimit.pace import (
    Backend,
    Pace,
    RateLimiter,
    Reservation,
    ThrottledError,
    plan_slot,
    refusal,
)

log = logging.getLogger(__name__)

# The limiter sits on the delivery path: fail fast rather than hold a worker on a dead socket.
REDIS_TIMEOUT_SECONDS = 2.0
# When Redis cannot be reached the broker (the same server) is down too: defer, retry soon.
REDIS_DOWN_RETRY_SECONDS = 5.0
# Keys outlive the state they carry by this much, then expire while the destination is idle.
IDLE_TTL_SECONDS = 60.0

# ARGV[1] is the injected clock ("" = the Redis server's TIME, shared by all machines).
_LUA_PRELUDE = """
local function fmt(x) return string.format('%.6f', x) end
local function now()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function store(key, value, t, idle)
  redis.call('SET', key, fmt(value), 'PX', math.ceil((value - t + idle) * 1000))
end
"""
# Same arithmetic as ratelimit.plan_slot, atomically (a script runs alone on the server).
# KEYS: next slot, penalty end. ARGV: now, interval, max_wait, idle TTL.
RESERVE_LUA = (
    _LUA_PRELUDE
    + """
local t = now()
local interval, max_wait = tonumber(ARGV[2]), tonumber(ARGV[3])
local next_slot = tonumber(redis.call('GET', KEYS[1]) or '0')
local penalty_until = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(next_slot, t)
local wait = slot - t
if wait > max_wait then return {'refused', fmt(wait)} end
local step = interval
if slot < penalty_until then step = 2 * interval end
store(KEYS[1], slot + step, t, tonumber(ARGV[4]))
return {'ok', fmt(slot), fmt(wait)}
"""
)
# KEYS: penalty end. ARGV: now, penalty seconds, idle TTL. Never shortens a running penalty.
PENALISE_LUA = (
    _LUA_PRELUDE
    + """
local t = now()
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
store(KEYS[1], math.max(current, t + tonumber(ARGV[2])), t, tonumber(ARGV[3]))
return 'ok'
"""
)


def redis_client(broker_url: str) -> redis.Redis:
    """A client for the broker's own Redis (kombu URL forms: redis, rediss, redis+socket)."""
    url = broker_url.split(";", 1)[0]  # Celery's failover list: the first is the primary
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


class RedisBackend:
    """Keys `consent-relay:<namespace>:rate:<destination>` (next slot) and `...:penalty:...`;
    the namespace is the Celery queue, so deployments sharing one Redis do not collide."""

    def __init__(
        self, client: redis.Redis, namespace: str, clock: Callable[[], float] | None = None
    ):
        self.client = client
        self.namespace = namespace
        self._clock = clock
        self._reserve = client.register_script(RESERVE_LUA)
        self._penalise = client.register_script(PENALISE_LUA)

    def key(self, kind: str, destination: str) -> str:
        return f"consent-relay:{self.namespace}:{kind}:{destination}"

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def reserve(self, destination: str, pace: Pace) -> Reservation:
        keys = [self.key("rate", destination), self.key("penalty", destination)]
        args = [self._now_arg(), repr(pace.interval), repr(pace.max_wait), repr(IDLE_TTL_SECONDS)]
        try:
            result: Any = self._reserve(keys=keys, args=args)
        except redis.RedisError as exc:
            # Redis is the broker too, so it being down stops deliveries anyway; sending
            # unpaced could exceed Engage's limit, so defer the write instead.
            reason = f"rate limiter unavailable ({type(exc).__name__})"
            raise ThrottledError(destination, REDIS_DOWN_RETRY_SECONDS, reason) from exc
        if result[0] == b"refused":
            raise refusal(destination, float(result[1]))
        return Reservation(slot=float(result[1]), wait=float(result[2]))

    def penalise(self, destination: str, seconds: float) -> None:
        keys = [self.key("penalty", destination)]
        try:
            args = [self._now_arg(), repr(seconds), repr(IDLE_TTL_SECONDS)]
            self._penalise(keys=keys, args=args)
        except redis.RedisError as exc:
            # Best effort: the caller is already handling a rate-limited answer, and with
            # Redis (the broker) down no other write goes out either.
            log.warning("rate-limit penalty for %s not recorded: %r", destination, exc)


class DatabaseBackend:
    """One short transaction per call on the destination's `rate_limits` row; the caller
    sleeps after it has committed. Database errors propagate: unlike Redis, the ledger
    being unreachable or unmigrated is not something to retry around quietly."""

    def __init__(self, engine: Engine, clock: Callable[[], float] | None = None):
        self._sessions = make_session_factory(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock

    def reserve(self, destination: str, pace: Pace) -> Reservation:
        with self._sessions.begin() as session:
            row, now = self._lock(session, destination)
            # A refusal raises here: the transaction rolls back and nothing is reserved.
            reservation, row.next_slot = plan_slot(
                destination, row.next_slot, row.penalty_until, now, pace
            )
        return reservation

    def penalise(self, destination: str, seconds: float) -> None:
        with self._sessions.begin() as session:
            row, now = self._lock(session, destination)
            row.penalty_until = max(row.penalty_until, now + seconds)

    def _lock(self, session: Session, destination: str) -> tuple[RateLimitSlot, float]:
        """The row, locked for this transaction, and the clock read after taking the lock
        (read before, a waiter would reserve a slot in the past and send early)."""
        # On SQLite the first statement's BEGIN IMMEDIATE already serialises writers
        # (relay/ledger/db.py); on PostgreSQL, FOR UPDATE queues the others on this row.
        row = {"destination": destination, "next_slot": 0.0, "penalty_until": 0.0}
        insert_ignoring_conflicts(session, RateLimitSlot, [row])
        query = select(RateLimitSlot).where(RateLimitSlot.destination == destination)
        slot = session.scalars(query.with_for_update()).one()
        return slot, self._now(session)

    def _now(self, session: Session) -> float:
        if self._clock is not None:
            return self._clock()
        if self._postgres:
            # The database server's clock: one clock for every worker machine.
            now = session.scalar(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"))
            return float(now)
        return time.time()


def build_rate_limiter(
    settings: Settings, engine: Engine, *, sleep: Callable[[float], None] = time.sleep
) -> RateLimiter:
    """Redis (the broker itself) when the broker is Redis, else the ledger database."""
    backend: Backend
    if broker_kind(settings.broker_url) == "redis":
        backend = RedisBackend(redis_client(settings.broker_url), namespace=settings.queue)
    else:
        backend = DatabaseBackend(engine)
    keys = limiter_keys(settings.destinations)
    paces = {name: Pace.from_settings(dest) for name, dest in settings.destinations.items()}
    return RateLimiter(backend, shared_paces(paces, keys), sleep, keys)
