"""The outbox sweeper (`workers.delivery.sweeper`): which contacts it enqueues and when, over a
migrated SQLite ledger."""

from __future__ import annotations

import datetime as dt

from relay.config.settings import DeliverySettings
from relay.ledger.models import utcnow
from tests.helpers.delivery_world import (
    DESTINATION,
    SETTINGS,
    Clock,
    DeliveryWorld,
    Published,
    hours_ago,
)
from workers.delivery.contact import deliver_contact
from workers.delivery.sweeper import FRESH_GRACE, sweep


def test_sweeper_publishes_pending_rows_after_the_grace_period(
    delivery_world: DeliveryWorld,
) -> None:
    recorded = delivery_world.record("denied")
    clock = Clock(delivery_world.outbox(recorded).created_at)
    ctx = delivery_world.context(clock=clock)
    published = Published()

    assert sweep(ctx, published) == 0  # the intake's own message gets a head start
    clock.advance(FRESH_GRACE.total_seconds() - 0.5)
    assert sweep(ctx, published) == 0
    clock.advance(1.0)
    assert sweep(ctx, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)]
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and state.dispatched_at == clock.now

    # Not again within redispatch_after_seconds...
    clock.advance(SETTINGS.redispatch_after_seconds - 1)
    assert sweep(ctx, published) == 0
    assert len(published.calls) == 1
    # ...but again once it has passed and the row is still pending.
    clock.advance(2)
    assert sweep(ctx, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)] * 2
    assert delivery_world.requests() == []  # the sweeper itself never writes to Engage


def test_a_throttled_contact_is_swept_again_when_its_slot_is_due(
    delivery_world: DeliveryWorld,
) -> None:
    """Not `redispatch_after_seconds` after its dispatch: the throttled attempt consumed the
    message and released the lease (which clears `dispatched_at`), so nothing is in flight
    and the slot it was told to wait for decides."""
    from tests.unit.workers.delivery.test_contact_failures import Throttled

    recorded = delivery_world.record("granted")
    clock = Clock(delivery_world.outbox(recorded).created_at + FRESH_GRACE)
    published = Published()
    assert sweep(delivery_world.context(clock=clock), published) == 1
    throttled = delivery_world.context(clock=clock, writer=Throttled())
    assert deliver_contact(throttled, DESTINATION, recorded.contact_id, "w") == "throttled"

    clock.advance(1.0)  # the slot (1.5 s away) is not due yet
    assert sweep(delivery_world.context(clock=clock), published) == 0
    clock.advance(1.0)
    assert sweep(delivery_world.context(clock=clock), published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)] * 2


def test_sweeper_publishes_each_contact_once(delivery_world: DeliveryWorld) -> None:
    a1 = delivery_world.record("granted", occurred_at=hours_ago(2))
    delivery_world.record("denied", occurred_at=hours_ago(1))
    b = delivery_world.record("granted", email="someone.else@example.com")
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    published = Published()

    assert sweep(delivery_world.context(clock=clock), published) == 2
    assert sorted(published.calls) == sorted(
        [(DESTINATION, a1.contact_id), (DESTINATION, b.contact_id)]
    )


def test_sweeper_batch_size_limits_one_sweep(delivery_world: DeliveryWorld) -> None:
    delivery_world.record("granted", email="a@example.com")
    delivery_world.record("granted", email="b@example.com")
    delivery_world.record("granted", email="c@example.com")
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    ctx = delivery_world.context(clock=clock, settings=DeliverySettings(sweep_batch_size=2))
    published = Published()

    assert sweep(ctx, published) == 2
    assert sweep(ctx, published) == 1  # the rest, since the first two were just dispatched
    assert len(set(published.calls)) == 3


def test_sweeper_skips_a_contact_whose_lease_is_held(delivery_world: DeliveryWorld) -> None:
    recorded = delivery_world.record("denied")
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    delivery_world.set_state(
        recorded.contact_id,
        lease_owner="busy-worker",
        lease_expires_at=clock.now + dt.timedelta(seconds=60),
    )
    ctx = delivery_world.context(clock=clock)
    published = Published()

    assert sweep(ctx, published) == 0
    clock.advance(59)
    assert sweep(ctx, published) == 0
    clock.advance(2)  # the lease has expired: a crashed worker's contact is picked up
    assert sweep(ctx, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)]


def test_sweeper_waits_for_next_attempt_at(delivery_world: DeliveryWorld) -> None:
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    recorded = delivery_world.record("denied")
    delivery_world.faults(error_rate=1.0)
    failing = delivery_world.context(clock=clock)
    assert deliver_contact(failing, DESTINATION, recorded.contact_id, "w") == "failed"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and state.next_attempt_at is not None
    published = Published()

    assert sweep(failing, published) == 0
    clock.now = state.next_attempt_at - dt.timedelta(milliseconds=10)
    assert sweep(failing, published) == 0
    clock.now = state.next_attempt_at
    assert sweep(failing, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)]


def test_sweeper_never_publishes_delivered_or_superseded_rows(
    delivery_world: DeliveryWorld,
) -> None:
    old = delivery_world.record("granted", occurred_at=hours_ago(2))
    new = delivery_world.record("denied", occurred_at=hours_ago(1))
    assert (
        deliver_contact(delivery_world.context(), DESTINATION, new.contact_id, "w") == "delivered"
    )
    assert {delivery_world.outbox(old).status, delivery_world.outbox(new).status} == {
        "superseded",
        "delivered",
    }
    clock = Clock(utcnow())
    ctx = delivery_world.context(clock=clock)
    published = Published()

    for _ in range(3):
        clock.advance(3600)
        assert sweep(ctx, published) == 0
    assert published.calls == []
