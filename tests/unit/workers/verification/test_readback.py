"""Read-back verification and drift repair (workers/verification/) over a migrated SQLite
ledger and the real Engage emulator: what is due, what a read finds, how drift is recorded,
and how `repair` hands the decision back to the normal delivery path (`report` does not)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests
from sqlalchemy import select

from relay.config.settings import VerificationSettings
from relay.ledger.models import Outbox, Verification
from tests.helpers.delivery_world import DESTINATION, KEY, Clock, DeliveryWorld, Published
from workers.delivery.contact import deliver_contact
from workers.destinations.engage import EngageClient
from workers.destinations.reading import NO_CONTACT
from workers.verification.context import VerificationContext
from workers.verification.readback import verify_contacts
from workers.verification.schedule import schedule_verifications

AFTER_WRITE, INTERVAL = 5.0, 3600.0


class Reads:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    def __call__(self, destination: str, contact_ids: list[int]) -> None:
        self.calls.append((destination, contact_ids))


def context(world: DeliveryWorld, clock: Clock, policy: str = "repair") -> VerificationContext:
    settings = VerificationSettings(
        enabled=True, after_write_seconds=AFTER_WRITE, interval_seconds=INTERVAL
    )
    reader = EngageClient(world.destination())
    return VerificationContext(
        world.ledger.sessions,
        {DESTINATION: reader},
        {DESTINATION: policy},
        settings,
        {DESTINATION: 10},
        30.0,
        clock,
    )


def delivered(world: DeliveryWorld, consent: str, clock: Clock) -> int:
    recorded = world.record(consent)
    ctx = world.context(clock=clock)
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "delivered"
    return recorded.contact_id


def edit(world: DeliveryWorld, consent: str) -> None:
    url = f"{world.emulator.url}/_emulator/contacts/{KEY}/edit"
    response = requests.post(url, json={"attributes": {"tracking_consent": consent}}, timeout=5)
    assert response.status_code == 200, response.text


def verification(world: DeliveryWorld, contact_id: int) -> Verification:
    with world.ledger.sessions() as session:
        row = session.get(Verification, (DESTINATION, contact_id))
        assert row is not None
        return row


def test_a_write_is_read_back_after_the_delay_then_every_interval(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    contact = delivered(delivery_world, "granted", clock)
    ctx, reads = context(delivery_world, clock), Reads()
    assert schedule_verifications(ctx, reads) == 0  # too soon after the write
    clock.advance(AFTER_WRITE + 1)
    assert schedule_verifications(ctx, reads) == 1
    assert reads.calls == [(DESTINATION, [contact])]
    assert schedule_verifications(ctx, reads) == 0  # already dispatched

    assert verify_contacts(ctx, DESTINATION, [contact], Published()) == {"verified": 1}
    row = verification(delivery_world, contact)
    assert (row.status, row.seen, row.drifts) == ("verified", "granted", 0)
    assert row.verified_at == row.checked_at == clock.now
    assert delivery_world.state()["counts"]["get"] == 1

    clock.advance(INTERVAL / 2)
    assert schedule_verifications(ctx, reads) == 0  # verified recently
    clock.advance(INTERVAL)
    assert schedule_verifications(ctx, reads) == 1  # due again


def test_drift_is_recorded_and_repaired_through_the_delivery_path(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    contact = delivered(delivery_world, "withdrawn", clock)
    edit(delivery_world, "granted")  # an import overwrote the withdrawal
    clock.advance(AFTER_WRITE + 1)
    repairs = Published()

    assert verify_contacts(context(delivery_world, clock), DESTINATION, [contact], repairs) == {
        "drift": 1
    }

    row = verification(delivery_world, contact)
    assert (row.status, row.seen, row.drifts, row.last_drift_seen) == (
        "drift",
        "granted",
        1,
        "granted",
    )
    assert row.verified_at is None
    assert repairs.calls == [(DESTINATION, contact)]
    assert repairs.urgent == [(DESTINATION, contact)]  # a withdrawal goes in the urgent lane
    state = delivery_world.delivery_state(contact)
    assert state is not None and state.delivered_event_id is None
    # The decision is pending again: the sweeper delivers it even if the message is lost.
    with delivery_world.ledger.sessions() as session:
        assert session.scalars(select(Outbox.status)).all() == ["pending"]
    outcome = deliver_contact(delivery_world.context(clock=clock), DESTINATION, contact, "w")
    assert outcome == "delivered"
    assert delivery_world.engage_consent() == "withdrawn"
    attempts = delivery_world.attempts(contact)
    assert [a.outcome for a in attempts] == ["delivered", "delivered"]


def test_report_policy_records_drift_without_repairing(delivery_world: DeliveryWorld) -> None:
    clock = Clock()
    contact = delivered(delivery_world, "denied", clock)
    edit(delivery_world, "granted")
    repairs = Published()
    ctx = context(delivery_world, clock, policy="report")
    assert verify_contacts(ctx, DESTINATION, [contact], repairs) == {"drift": 1}
    assert repairs.calls == []
    state = delivery_world.delivery_state(contact)
    assert state is not None and state.delivered_event_id is not None
    assert delivery_world.engage_consent() == "granted"  # left as found, reported


def test_a_contact_missing_at_the_destination_is_drift(delivery_world: DeliveryWorld) -> None:
    clock = Clock()
    contact = delivered(delivery_world, "granted", clock)
    requests.post(f"{delivery_world.emulator.url}/_emulator/reset", timeout=5)
    ctx = context(delivery_world, clock)
    assert verify_contacts(ctx, DESTINATION, [contact], Published()) == {"drift": 1}
    assert verification(delivery_world, contact).seen == NO_CONTACT


@pytest.mark.parametrize("why", ["lease", "newer_decision"])
def test_a_contact_being_delivered_is_skipped(delivery_world: DeliveryWorld, why: str) -> None:
    clock = Clock()
    contact = delivered(delivery_world, "granted", clock)
    if why == "lease":
        until = clock.now + dt.timedelta(seconds=60)
        delivery_world.set_state(contact, lease_owner="other", lease_expires_at=until)
    else:
        delivery_world.record("denied")  # not delivered yet
    edit(delivery_world, "unknown")
    repairs = Published()
    assert verify_contacts(context(delivery_world, clock), DESTINATION, [contact], repairs) == {
        "skipped": 1
    }
    assert repairs.calls == []
    assert delivery_world.state()["counts"]["get"] == 0  # nothing read


def test_a_failed_read_is_recorded_as_an_error(delivery_world: DeliveryWorld) -> None:
    clock = Clock()
    contact = delivered(delivery_world, "granted", clock)
    delivery_world.faults(error_rate=1.0, error_status=503)
    ctx = context(delivery_world, clock)
    outcome: dict[str, Any] = verify_contacts(ctx, DESTINATION, [contact], Published())
    assert outcome == {"error": 1}
    row = verification(delivery_world, contact)
    assert (row.status, row.verified_at) == ("error", None)
