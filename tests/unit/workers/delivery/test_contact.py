"""State-based delivery (`workers.delivery.contact.deliver_contact`) over a migrated SQLite ledger
and the real Engage emulator: latest decision wins, and the lease serialises writers."""

from __future__ import annotations

import datetime as dt
import sqlite3

from sqlalchemy import update

from relay.domain import ConsentWrite, Decision
from relay.ledger.models import DeliveryState, utcnow
from relay.ledger.record import Recorded, record_decision
from tests.helpers.delivery_world import (
    DESTINATION,
    EMAIL,
    KEY,
    SETTINGS,
    Clock,
    DeliveryWorld,
    hours_ago,
)
from workers.delivery.contact import deliver_contact
from workers.destinations.engage import EngageClient

# --- delivering -------------------------------------------------------------------------------


def test_new_contact_is_delivered(delivery_world: DeliveryWorld) -> None:
    recorded = delivery_world.record("denied", source_id="form-1")

    outcome = deliver_contact(
        delivery_world.context(), DESTINATION, recorded.contact_id, "worker-1"
    )

    assert outcome == "delivered"
    assert delivery_world.outbox(recorded).status == "delivered"
    assert delivery_world.outbox(recorded).settled_by_event_id == delivery_world.event_id(recorded)
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.delivered_event_id == delivery_world.event_id(recorded)
    assert state.delivered_at is not None
    assert (state.attempts, state.next_attempt_at, state.last_status) == (0, None, 200)
    assert (state.lease_owner, state.lease_expires_at) == (None, None)  # released
    contact = delivery_world.state()["contacts"][KEY]
    assert contact["emailAddress"] == EMAIL
    assert contact["attributes"] == {
        "tracking_consent": "denied",
        "tracking_consent_source": "registration_form",
        "tracking_consent_source_id": "form-1",
    }
    [attempt] = delivery_world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("delivered", 200)


def test_second_call_is_settled_without_a_request_or_the_lease(
    delivery_world: DeliveryWorld,
) -> None:
    """The queue holds a task per decision: the later ones find nothing pending and leave at
    once, without taking the lease (whose commits made them cost as much as a delivery)."""
    recorded = delivery_world.record("granted")
    ctx = delivery_world.context()
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "worker-1") == "delivered"
    requests_before = delivery_world.requests()
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    with delivery_world.ledger.sessions() as session:  # a lease held by someone else ...
        session.execute(
            update(DeliveryState)
            .where(DeliveryState.contact_id == recorded.contact_id)
            .values(lease_owner="someone", lease_expires_at=utcnow() + dt.timedelta(minutes=1))
        )
        session.commit()

    # ... does not matter: not "busy", since nothing is owed
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "worker-2") == "settled"

    assert delivery_world.requests() == requests_before
    assert len(delivery_world.attempts(recorded.contact_id)) == 1


def test_contact_without_events_for_this_destination_is_settled(
    delivery_world: DeliveryWorld,
) -> None:
    with delivery_world.ledger.sessions() as session:
        recorded = record_decision(
            session,
            source_name="signup",
            delivery_id="msg_nowhere",
            webhook_timestamp=0,
            body_sha256="0" * 64,
            decision=Decision(EMAIL, "granted", "registration_form", None, None),
            destinations=[],
        )
    assert (
        deliver_contact(delivery_world.context(), DESTINATION, recorded.contact_id, "w")
        == "settled"
    )
    assert delivery_world.requests() == []


def test_older_decision_arriving_later_is_not_written(delivery_world: DeliveryWorld) -> None:
    newer = delivery_world.record("withdrawn", occurred_at=hours_ago(1))
    ctx = delivery_world.context()
    assert deliver_contact(ctx, DESTINATION, newer.contact_id, "worker-1") == "delivered"
    requests_before = delivery_world.requests()

    older = delivery_world.record("granted", occurred_at=hours_ago(2))
    outcome = deliver_contact(ctx, DESTINATION, older.contact_id, "worker-2")

    assert outcome == "up_to_date"
    assert delivery_world.requests() == requests_before  # nothing sent
    assert delivery_world.engage_consent() == "withdrawn"
    row = delivery_world.outbox(older)
    assert row.status == "superseded"
    assert row.settled_by_event_id == delivery_world.event_id(newer)
    assert row.settled_at is not None
    state = delivery_world.delivery_state(older.contact_id)
    assert state is not None and state.delivered_event_id == delivery_world.event_id(newer)


def test_backlog_sends_only_the_latest_decision(delivery_world: DeliveryWorld) -> None:
    newest = delivery_world.record("denied", occurred_at=hours_ago(1))
    oldest = delivery_world.record("granted", occurred_at=hours_ago(3))
    middle = delivery_world.record("withdrawn", occurred_at=hours_ago(2))

    assert (
        deliver_contact(delivery_world.context(), DESTINATION, newest.contact_id, "w")
        == "delivered"
    )

    assert delivery_world.engage_consent() == "denied"
    history = delivery_world.state()["contacts"][KEY]["history"]
    assert [entry["attributes"]["tracking_consent"] for entry in history] == ["denied"]
    assert delivery_world.outbox(newest).status == "delivered"
    for recorded in (oldest, middle):
        assert delivery_world.outbox(recorded).status == "superseded"
        assert delivery_world.outbox(recorded).settled_by_event_id == delivery_world.event_id(
            newest
        )


def test_same_occurred_at_the_later_arrival_wins(delivery_world: DeliveryWorld) -> None:
    moment = hours_ago(1)
    first = delivery_world.record("granted", occurred_at=moment)
    second = delivery_world.record("denied", occurred_at=moment)

    assert (
        deliver_contact(delivery_world.context(), DESTINATION, first.contact_id, "w") == "delivered"
    )

    assert delivery_world.engage_consent() == "denied"
    assert delivery_world.outbox(second).status == "delivered"
    assert delivery_world.outbox(first).status == "superseded"
    assert delivery_world.outbox(first).settled_by_event_id == delivery_world.event_id(second)


def test_new_decision_after_delivery_is_written(delivery_world: DeliveryWorld) -> None:
    ctx = delivery_world.context()
    first = delivery_world.record("granted", occurred_at=hours_ago(2))
    deliver_contact(ctx, DESTINATION, first.contact_id, "w1")
    second = delivery_world.record("denied")  # no occurred_at: receipt time, i.e. now

    assert deliver_contact(ctx, DESTINATION, second.contact_id, "w2") == "delivered"

    assert delivery_world.engage_consent() == "denied"
    history = delivery_world.state()["contacts"][KEY]["history"]
    assert [entry["call"] for entry in history] == ["create", "update"]
    assert delivery_world.outbox(first).status == "delivered"  # settled when it was delivered
    assert delivery_world.outbox(second).status == "delivered"


# --- the lease -----------------------------------------------------------------------------------


def test_lease_held_by_another_owner_is_busy(delivery_world: DeliveryWorld) -> None:
    recorded = delivery_world.record("denied")
    expires = utcnow() + dt.timedelta(seconds=60)
    delivery_world.set_state(
        recorded.contact_id, lease_owner="other-worker", lease_expires_at=expires
    )

    outcome = deliver_contact(
        delivery_world.context(), DESTINATION, recorded.contact_id, "worker-1"
    )

    assert outcome == "busy"
    assert delivery_world.requests() == []
    assert delivery_world.outbox(recorded).status == "pending"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert (state.lease_owner, state.lease_expires_at) == ("other-worker", expires)
    assert delivery_world.attempts(recorded.contact_id) == []


def test_expired_lease_is_taken_over(delivery_world: DeliveryWorld) -> None:
    recorded = delivery_world.record("denied")
    delivery_world.set_state(
        recorded.contact_id,
        lease_owner="crashed-worker",
        lease_expires_at=utcnow() - dt.timedelta(seconds=1),
    )

    outcome = deliver_contact(
        delivery_world.context(), DESTINATION, recorded.contact_id, "worker-1"
    )

    assert outcome == "delivered"
    assert delivery_world.engage_consent() == "denied"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.lease_owner is None


def test_lease_is_taken_for_the_configured_duration(delivery_world: DeliveryWorld) -> None:
    recorded = delivery_world.record("denied")
    seen: list[DeliveryState | None] = []
    client = EngageClient(delivery_world.destination())
    observer = delivery_world.side_sessions()

    class Observing:
        def write(self, write: ConsentWrite) -> int:
            with observer() as session:  # a WAL reader: never waits for the writer
                seen.append(session.get(DeliveryState, (DESTINATION, recorded.contact_id)))
            return client.write(write)

    clock = Clock()
    ctx = delivery_world.context(clock=clock, writer=Observing())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "worker-9") == "delivered"
    [during] = seen
    assert during is not None
    assert during.lease_owner == "worker-9"
    assert during.lease_expires_at == clock.now + dt.timedelta(seconds=SETTINGS.lease_seconds)


# Regression: the SQLite write lock must not be held across the destination call.
def test_ledger_is_writable_while_the_destination_call_is_in_flight(
    delivery_world: DeliveryWorld,
) -> None:
    recorded = delivery_world.record("denied")
    client = EngageClient(delivery_world.destination())
    database = delivery_world.ledger.url.removeprefix("sqlite:///")
    lock_free: list[bool] = []

    class Probe:
        def write(self, write: ConsentWrite) -> int:
            connection = sqlite3.connect(database, timeout=0.2, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")  # what the intake needs to record an event
                connection.execute("ROLLBACK")
                lock_free.append(True)
            except sqlite3.OperationalError:
                lock_free.append(False)
            finally:
                connection.close()
            return client.write(write)

    ctx = delivery_world.context(writer=Probe())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "delivered"
    assert lock_free == [True]


def test_lease_lost_during_the_write_is_not_recorded_as_delivered(
    delivery_world: DeliveryWorld,
) -> None:
    recorded = delivery_world.record("denied")
    client = EngageClient(delivery_world.destination())
    later = utcnow() + dt.timedelta(seconds=300)
    other_worker = delivery_world.side_sessions()

    class LeaseStolen:
        """Another worker takes over (our lease expired) while our request is in flight."""

        def write(self, write: ConsentWrite) -> int:
            status = client.write(write)
            with other_worker() as session:
                session.execute(
                    update(DeliveryState)
                    .where(DeliveryState.contact_id == recorded.contact_id)
                    .values(lease_owner="thief", lease_expires_at=later)
                )
                session.commit()
            return status

    ctx = delivery_world.context(writer=LeaseStolen())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "slow-worker") == "lease_lost"

    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.delivered_event_id is None  # the fenced update did not apply
    assert state.lease_owner == "thief"  # and our release did not free the thief's lease
    assert delivery_world.outbox(recorded).status == "pending"
    assert [a.outcome for a in delivery_world.attempts(recorded.contact_id)] == ["delivered"]


def test_decision_arriving_during_a_write_is_sent_in_the_same_lease(
    delivery_world: DeliveryWorld,
) -> None:
    first = delivery_world.record("granted", occurred_at=hours_ago(1))
    client = EngageClient(delivery_world.destination())
    intake = delivery_world.side_sessions()
    arrivals: list[Recorded] = []

    class NewDecisionMeanwhile:
        def write(self, write: ConsentWrite) -> int:
            if not arrivals:
                arrivals.append(delivery_world.record("withdrawn", sessions=intake))
            return client.write(write)

    ctx = delivery_world.context(writer=NewDecisionMeanwhile())
    assert deliver_contact(ctx, DESTINATION, first.contact_id, "w") == "delivered"

    history = delivery_world.state()["contacts"][KEY]["history"]
    assert [e["attributes"]["tracking_consent"] for e in history] == ["granted", "withdrawn"]
    assert delivery_world.outbox(first).status == "delivered"
    assert delivery_world.outbox(arrivals[0]).status == "delivered"
