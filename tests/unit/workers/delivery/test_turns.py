"""A write the shared pace refused comes back by itself at its turn (workers/ratelimit/turns.py),
through the real delivery path: a migrated SQLite ledger, the Engage emulator over HTTP, and
the rate limiter on the ledger's `rate_limits` table with an injected clock. The turns' own
arithmetic on Redis and PostgreSQL is in tests/unit/workers/ratelimit/test_pace.py."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from tests.helpers.delivery_world import (
    DESTINATION,
    SETTINGS,
    Clock,
    DeliveryWorld,
    Published,
)
from workers.delivery.contact import DeliveryContext, deliver_contact
from workers.delivery.sweeper import FRESH_GRACE, sweep
from workers.destinations.engage import EngageClient
from workers.ratelimit.backends import DatabaseBackend
from workers.ratelimit.pace import Pace, RateLimiter

ONE_PER_SECOND = Pace.for_rate(1.0)
BUSY_FOR = 3.0  # someone else holds the pace this far ahead: every write is refused


@dataclass
class Requeued:
    """The task shell's requeue: records (contact id, countdown, urgent)."""

    calls: list[tuple[int, float, bool]] = field(default_factory=list)
    accept: bool = True
    contact_id: int = 0

    def __call__(self, countdown: float, urgent: bool) -> bool:
        self.calls.append((self.contact_id, countdown, urgent))
        return self.accept


def paced_context(world: DeliveryWorld, clock: Clock) -> DeliveryContext:
    """Engage behind a limiter of one call a second whose next slot is BUSY_FOR away."""
    epoch = clock.now.timestamp()
    backend = DatabaseBackend(world.ledger.engine, clock=lambda: epoch)
    limiter = RateLimiter(backend, {DESTINATION: ONE_PER_SECOND}, sleep=lambda _s: None)
    backend.reserve(DESTINATION, Pace(BUSY_FOR))  # another process's reservation
    writer = EngageClient(world.destination(), throttle=limiter.for_destination(DESTINATION))
    return DeliveryContext(
        world.ledger.sessions, {DESTINATION: writer}, SETTINGS, clock, limiter=limiter
    )


def deliver(ctx: DeliveryContext, contact_id: int, requeued: Requeued) -> str:
    requeued.contact_id = contact_id
    return deliver_contact(ctx, DESTINATION, contact_id, f"w-{contact_id}", requeued)


def test_refused_writes_come_back_one_interval_apart_withdrawals_in_their_own_queue(
    delivery_world: DeliveryWorld,
) -> None:
    grants = [delivery_world.record("granted", email=f"g{i}@example.com") for i in range(3)]
    withdrawal = delivery_world.record("withdrawn", email="w@example.com")
    clock = Clock(delivery_world.outbox(grants[0]).created_at + FRESH_GRACE)
    ctx, requeued = paced_context(delivery_world, clock), Requeued()

    for recorded in [*grants, withdrawal]:
        assert deliver(ctx, recorded.contact_id, requeued) == "throttled"

    # Not all at the next sweep: the grants one interval apart from the refused slot, and
    # the withdrawal at that slot, ahead of the grants' turns, in the urgent lane.
    assert requeued.calls == [
        (grants[0].contact_id, pytest.approx(BUSY_FOR), False),
        (grants[1].contact_id, pytest.approx(BUSY_FOR + 1), False),
        (grants[2].contact_id, pytest.approx(BUSY_FOR + 2), False),
        (withdrawal.contact_id, pytest.approx(BUSY_FOR), True),
    ]
    assert delivery_world.requests() == []  # nothing was sent, nothing reserved
    state = delivery_world.delivery_state(grants[2].contact_id)
    assert state is not None and state.lease_owner is None
    assert state.next_attempt_at == clock.now + dt.timedelta(seconds=BUSY_FOR + 2)


def test_the_sweeper_leaves_a_requeued_contact_to_its_own_message(
    delivery_world: DeliveryWorld,
) -> None:
    recorded = delivery_world.record("granted")
    clock = Clock(delivery_world.outbox(recorded).created_at + FRESH_GRACE)
    ctx, requeued, published = paced_context(delivery_world, clock), Requeued(), Published()
    assert deliver(ctx, recorded.contact_id, requeued) == "throttled"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and state.dispatched_at == clock.now  # its message is on the way

    clock.advance(BUSY_FOR + 1)  # due, but coming back by itself: no second message
    assert sweep(delivery_world.context(clock=clock), published) == 0
    clock.advance(SETTINGS.redispatch_after_seconds)  # the message was lost: the backstop
    assert sweep(delivery_world.context(clock=clock), published) == 1


def test_a_requeue_that_could_not_be_sent_leaves_the_contact_to_the_sweeper(
    delivery_world: DeliveryWorld,
) -> None:
    recorded = delivery_world.record("granted")
    clock = Clock(delivery_world.outbox(recorded).created_at + FRESH_GRACE)
    ctx, requeued, published = paced_context(delivery_world, clock), Requeued(accept=False), []
    assert deliver(ctx, recorded.contact_id, requeued) == "throttled"
    assert len(requeued.calls) == 1
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and state.dispatched_at is None

    clock.advance(BUSY_FOR + 0.1)  # its slot: swept at once, not a redispatch period later
    sweep(delivery_world.context(clock=clock), lambda d, c, u: published.append(c))
    assert published == [recorded.contact_id]


def test_without_a_turn_in_reach_the_write_waits_for_the_sweeper(
    delivery_world: DeliveryWorld,
) -> None:
    """Turns reach at most MAX_TURN_AHEAD_SECONDS: beyond, no countdown message is held."""
    from workers.ratelimit.turns import MAX_TURN_AHEAD_SECONDS, TURNS_KEY_SUFFIX

    recorded = delivery_world.record("granted")
    clock = Clock(delivery_world.outbox(recorded).created_at + FRESH_GRACE)
    ctx, requeued = paced_context(delivery_world, clock), Requeued()
    assert ctx.limiter is not None
    far = Pace(MAX_TURN_AHEAD_SECONDS + 1)
    ctx.limiter.backend.reserve(DESTINATION + TURNS_KEY_SUFFIX, far)  # a long line of turns
    assert deliver(ctx, recorded.contact_id, requeued) == "throttled"
    assert requeued.calls == []
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and state.dispatched_at is None
    assert state.next_attempt_at == clock.now + dt.timedelta(seconds=BUSY_FOR)
