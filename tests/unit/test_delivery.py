"""State-based delivery (`workers.delivery.deliver_contact`) and the outbox sweeper, over a
migrated SQLite ledger and the real Engage emulator."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import sqlite3
import statistics
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from emulators.engage import EmulatorServer
from service.config import DeliverySettings, DestinationSettings
from service.ledger import Decision, Recorded, record_decision
from service.models import DeliveryAttempt, DeliveryState, Event, Outbox, utcnow
from workers.delivery import DeliveryContext, backoff_seconds, deliver_contact
from workers.engage import ConsentWrite, EngageClient
from workers.sweeper import FRESH_GRACE, sweep

EMAIL = "Jane.Doe+tag@Example.com"
KEY = "jane.doe+tag@example.com"
DESTINATION = "engage"
SETTINGS = DeliverySettings(
    redispatch_after_seconds=30.0,
    lease_seconds=180,
    first_retry_seconds=5.0,
    max_retry_seconds=3600.0,
)

State = Callable[[], dict[str, Any]]


@dataclass
class Clock:
    """A settable clock for DeliveryContext(clock=...)."""

    now: dt.datetime = field(default_factory=utcnow)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class World:
    ledger: Any
    emulator: EmulatorServer
    state: State
    destination: Callable[..., DestinationSettings]
    _side_engines: list[Engine] = field(default_factory=list)

    def context(
        self,
        password: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        settings: DeliverySettings = SETTINGS,
        writer: Any = None,
    ) -> DeliveryContext:
        dest = self.destination() if password is None else self.destination(password=password)
        return DeliveryContext(
            self.ledger.sessions, {DESTINATION: writer or EngageClient(dest)}, settings, clock
        )

    def record(
        self,
        consent: str,
        occurred_at: dt.datetime | None = None,
        email: str = EMAIL,
        source_id: str | None = None,
        sessions: sessionmaker[Session] | None = None,
    ) -> Recorded:
        with (sessions or self.ledger.sessions)() as session:
            return record_decision(
                session,
                source_name="signup",
                delivery_id=f"msg_{uuid.uuid4().hex}",
                webhook_timestamp=int(utcnow().timestamp()),
                body_sha256=hashlib.sha256(consent.encode()).hexdigest(),
                decision=Decision(
                    email=email,
                    tracking_consent=consent,
                    source="registration_form",
                    source_id=source_id,
                    occurred_at=occurred_at,
                ),
                destinations=[DESTINATION],
            )

    def side_sessions(self) -> sessionmaker[Session]:
        """Sessions on a second engine with a short busy timeout and SQLite's default deferred
        transactions: another process's view of the ledger, failing fast instead of waiting 15 s
        when the write lock is taken."""
        engine = create_engine(self.ledger.url, connect_args={"timeout": 0.2})
        self._side_engines.append(engine)
        return sessionmaker(engine, expire_on_commit=False)

    def event_id(self, recorded: Recorded) -> int:
        with self.ledger.sessions() as session:
            return int(
                session.execute(
                    select(Event.id).where(Event.public_id == recorded.event_id)
                ).scalar_one()
            )

    def outbox(self, recorded: Recorded) -> Outbox:
        event_id = self.event_id(recorded)
        with self.ledger.sessions() as session:
            return session.execute(
                select(Outbox).where(Outbox.event_id == event_id, Outbox.destination == DESTINATION)
            ).scalar_one()

    def delivery_state(self, contact_id: int) -> DeliveryState | None:
        with self.ledger.sessions() as session:
            return session.get(DeliveryState, (DESTINATION, contact_id))

    def attempts(self, contact_id: int) -> list[DeliveryAttempt]:
        with self.ledger.sessions() as session:
            return list(
                session.scalars(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.contact_id == contact_id)
                    .order_by(DeliveryAttempt.id)
                )
            )

    def set_state(self, contact_id: int, **values: Any) -> None:
        with self.ledger.sessions() as session:
            exists = session.get(DeliveryState, (DESTINATION, contact_id))
            if exists is None:
                session.add(DeliveryState(destination=DESTINATION, contact_id=contact_id, **values))
            else:
                session.execute(
                    update(DeliveryState)
                    .where(
                        DeliveryState.destination == DESTINATION,
                        DeliveryState.contact_id == contact_id,
                    )
                    .values(**values)
                )
            session.commit()

    def requests(self) -> list[dict[str, Any]]:
        return list(self.state()["requests"])

    def engage_consent(self, key: str = KEY) -> str | None:
        contact = self.state()["contacts"].get(key)
        return None if contact is None else contact["attributes"]["tracking_consent"]


@pytest.fixture
def world(
    ledger: Any,
    emulator: EmulatorServer,
    emulator_state: State,
    engage_settings: Callable[..., DestinationSettings],
) -> Iterator[World]:
    built = World(ledger, emulator, emulator_state, engage_settings)
    try:
        yield built
    finally:
        for engine in built._side_engines:
            engine.dispose()


def hours_ago(hours: float) -> dt.datetime:
    return utcnow() - dt.timedelta(hours=hours)


# --- delivering -------------------------------------------------------------------------------


def test_new_contact_is_delivered(world: World) -> None:
    recorded = world.record("denied", source_id="form-1")

    outcome = deliver_contact(world.context(), DESTINATION, recorded.contact_id, "worker-1")

    assert outcome == "delivered"
    assert world.outbox(recorded).status == "delivered"
    assert world.outbox(recorded).settled_by_event_id == world.event_id(recorded)
    state = world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.delivered_event_id == world.event_id(recorded)
    assert state.delivered_at is not None
    assert (state.attempts, state.next_attempt_at, state.last_status) == (0, None, 200)
    assert (state.lease_owner, state.lease_expires_at) == (None, None)  # released
    contact = world.state()["contacts"][KEY]
    assert contact["emailAddress"] == EMAIL
    assert contact["attributes"] == {
        "tracking_consent": "denied",
        "tracking_consent_source": "registration_form",
        "tracking_consent_source_id": "form-1",
    }
    [attempt] = world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("delivered", 200)


def test_second_call_is_up_to_date_without_a_request(world: World) -> None:
    recorded = world.record("granted")
    ctx = world.context()
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "worker-1") == "delivered"
    requests_before = world.requests()

    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "worker-2") == "up_to_date"

    assert world.requests() == requests_before
    assert len(world.attempts(recorded.contact_id)) == 1


def test_contact_without_events_for_this_destination_is_nothing(world: World) -> None:
    with world.ledger.sessions() as session:
        recorded = record_decision(
            session,
            source_name="signup",
            delivery_id="msg_nowhere",
            webhook_timestamp=0,
            body_sha256="0" * 64,
            decision=Decision(EMAIL, "granted", "registration_form", None, None),
            destinations=[],
        )
    assert deliver_contact(world.context(), DESTINATION, recorded.contact_id, "w") == "nothing"
    assert world.requests() == []


def test_older_decision_arriving_later_is_not_written(world: World) -> None:
    newer = world.record("withdrawn", occurred_at=hours_ago(1))
    ctx = world.context()
    assert deliver_contact(ctx, DESTINATION, newer.contact_id, "worker-1") == "delivered"
    requests_before = world.requests()

    older = world.record("granted", occurred_at=hours_ago(2))
    outcome = deliver_contact(ctx, DESTINATION, older.contact_id, "worker-2")

    assert outcome == "up_to_date"
    assert world.requests() == requests_before  # nothing sent
    assert world.engage_consent() == "withdrawn"
    row = world.outbox(older)
    assert row.status == "superseded"
    assert row.settled_by_event_id == world.event_id(newer)
    assert row.settled_at is not None
    state = world.delivery_state(older.contact_id)
    assert state is not None and state.delivered_event_id == world.event_id(newer)


def test_backlog_sends_only_the_latest_decision(world: World) -> None:
    newest = world.record("denied", occurred_at=hours_ago(1))
    oldest = world.record("granted", occurred_at=hours_ago(3))
    middle = world.record("withdrawn", occurred_at=hours_ago(2))

    assert deliver_contact(world.context(), DESTINATION, newest.contact_id, "w") == "delivered"

    assert world.engage_consent() == "denied"
    history = world.state()["contacts"][KEY]["history"]
    assert [entry["attributes"]["tracking_consent"] for entry in history] == ["denied"]
    assert world.outbox(newest).status == "delivered"
    for recorded in (oldest, middle):
        assert world.outbox(recorded).status == "superseded"
        assert world.outbox(recorded).settled_by_event_id == world.event_id(newest)


def test_same_occurred_at_the_later_arrival_wins(world: World) -> None:
    moment = hours_ago(1)
    first = world.record("granted", occurred_at=moment)
    second = world.record("denied", occurred_at=moment)

    assert deliver_contact(world.context(), DESTINATION, first.contact_id, "w") == "delivered"

    assert world.engage_consent() == "denied"
    assert world.outbox(second).status == "delivered"
    assert world.outbox(first).status == "superseded"
    assert world.outbox(first).settled_by_event_id == world.event_id(second)


def test_new_decision_after_delivery_is_written(world: World) -> None:
    ctx = world.context()
    first = world.record("granted", occurred_at=hours_ago(2))
    deliver_contact(ctx, DESTINATION, first.contact_id, "w1")
    second = world.record("denied")  # no occurred_at: receipt time, i.e. now

    assert deliver_contact(ctx, DESTINATION, second.contact_id, "w2") == "delivered"

    assert world.engage_consent() == "denied"
    history = world.state()["contacts"][KEY]["history"]
    assert [entry["call"] for entry in history] == ["create", "update"]
    assert world.outbox(first).status == "delivered"  # settled when it was delivered
    assert world.outbox(second).status == "delivered"


# --- the lease -----------------------------------------------------------------------------------


def test_lease_held_by_another_owner_is_busy(world: World) -> None:
    recorded = world.record("denied")
    expires = utcnow() + dt.timedelta(seconds=60)
    world.set_state(recorded.contact_id, lease_owner="other-worker", lease_expires_at=expires)

    outcome = deliver_contact(world.context(), DESTINATION, recorded.contact_id, "worker-1")

    assert outcome == "busy"
    assert world.requests() == []
    assert world.outbox(recorded).status == "pending"
    state = world.delivery_state(recorded.contact_id)
    assert state is not None
    assert (state.lease_owner, state.lease_expires_at) == ("other-worker", expires)
    assert world.attempts(recorded.contact_id) == []


def test_expired_lease_is_taken_over(world: World) -> None:
    recorded = world.record("denied")
    world.set_state(
        recorded.contact_id,
        lease_owner="crashed-worker",
        lease_expires_at=utcnow() - dt.timedelta(seconds=1),
    )

    outcome = deliver_contact(world.context(), DESTINATION, recorded.contact_id, "worker-1")

    assert outcome == "delivered"
    assert world.engage_consent() == "denied"
    state = world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.lease_owner is None


def test_lease_is_taken_for_the_configured_duration(world: World) -> None:
    recorded = world.record("denied")
    seen: list[DeliveryState | None] = []
    client = EngageClient(world.destination())
    observer = world.side_sessions()

    class Observing:
        def write(self, write: ConsentWrite) -> int:
            with observer() as session:  # a WAL reader: never waits for the writer
                seen.append(session.get(DeliveryState, (DESTINATION, recorded.contact_id)))
            return client.write(write)

    clock = Clock()
    ctx = world.context(clock=clock, writer=Observing())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "worker-9") == "delivered"
    [during] = seen
    assert during is not None
    assert during.lease_owner == "worker-9"
    assert during.lease_expires_at == clock.now + dt.timedelta(seconds=SETTINGS.lease_seconds)


# Regression: the SQLite write lock must not be held across the destination call.
def test_ledger_is_writable_while_the_destination_call_is_in_flight(world: World) -> None:
    recorded = world.record("denied")
    client = EngageClient(world.destination())
    database = world.ledger.url.removeprefix("sqlite:///")
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

    ctx = world.context(writer=Probe())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "delivered"
    assert lock_free == [True]


def test_lease_lost_during_the_write_is_not_recorded_as_delivered(world: World) -> None:
    recorded = world.record("denied")
    client = EngageClient(world.destination())
    later = utcnow() + dt.timedelta(seconds=300)
    other_worker = world.side_sessions()

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

    ctx = world.context(writer=LeaseStolen())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "slow-worker") == "lease_lost"

    state = world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.delivered_event_id is None  # the fenced update did not apply
    assert state.lease_owner == "thief"  # and our release did not free the thief's lease
    assert world.outbox(recorded).status == "pending"
    assert [a.outcome for a in world.attempts(recorded.contact_id)] == ["delivered"]


def test_decision_arriving_during_a_write_is_sent_in_the_same_lease(world: World) -> None:
    first = world.record("granted", occurred_at=hours_ago(1))
    client = EngageClient(world.destination())
    intake = world.side_sessions()
    arrivals: list[Recorded] = []

    class NewDecisionMeanwhile:
        def write(self, write: ConsentWrite) -> int:
            if not arrivals:
                arrivals.append(world.record("withdrawn", sessions=intake))
            return client.write(write)

    ctx = world.context(writer=NewDecisionMeanwhile())
    assert deliver_contact(ctx, DESTINATION, first.contact_id, "w") == "delivered"

    history = world.state()["contacts"][KEY]["history"]
    assert [e["attributes"]["tracking_consent"] for e in history] == ["granted", "withdrawn"]
    assert world.outbox(first).status == "delivered"
    assert world.outbox(arrivals[0]).status == "delivered"


# --- failures and backoff ----------------------------------------------------------------------


def test_failing_destination_records_the_attempt_and_backs_off(world: World) -> None:
    recorded = world.record("denied")
    before = utcnow()
    outcome = deliver_contact(
        world.context(password="wrong-password"), DESTINATION, recorded.contact_id, "worker-1"
    )
    after = utcnow()

    assert outcome == "failed"
    state = world.delivery_state(recorded.contact_id)
    assert state is not None
    assert state.attempts == 1
    assert state.next_attempt_at is not None
    first = SETTINGS.first_retry_seconds
    assert before + dt.timedelta(seconds=0.8 * first) <= state.next_attempt_at
    assert state.next_attempt_at <= after + dt.timedelta(seconds=1.2 * first)
    assert state.last_status == 403
    assert state.last_attempt_event_id == world.event_id(recorded)
    assert state.delivered_event_id is None
    assert state.lease_owner is None
    assert state.last_error is not None and "wrong-password" not in state.last_error
    [attempt] = world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("auth", 403)
    assert attempt.event_id == world.event_id(recorded)
    assert world.outbox(recorded).status == "pending"
    assert world.engage_consent() is None
    assert [r["status"] for r in world.requests()] == [403]


def test_unreachable_destination_is_a_transient_failure(world: World) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    recorded = world.record("denied")
    dest = world.destination(base_url=f"http://127.0.0.1:{port}")
    ctx = DeliveryContext(world.ledger.sessions, {DESTINATION: EngageClient(dest)}, SETTINGS)

    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "failed"

    [attempt] = world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("transient", None)
    assert world.outbox(recorded).status == "pending"


def test_waiting_out_the_backoff_then_a_new_decision_goes_at_once(world: World) -> None:
    old = world.record("granted", occurred_at=hours_ago(1))
    failing = world.context(password="wrong-password")
    working = world.context()
    assert deliver_contact(failing, DESTINATION, old.contact_id, "w1") == "failed"
    requests_after_failure = world.requests()

    # The same decision waits out its backoff, whichever writer would run it.
    assert deliver_contact(failing, DESTINATION, old.contact_id, "w2") == "waiting"
    assert deliver_contact(working, DESTINATION, old.contact_id, "w3") == "waiting"
    assert world.requests() == requests_after_failure
    assert len(world.attempts(old.contact_id)) == 1
    state = world.delivery_state(old.contact_id)
    assert state is not None and state.lease_owner is None  # waiting also releases

    # A new decision for that contact is attempted at once despite the backoff.
    new = world.record("withdrawn")
    assert deliver_contact(working, DESTINATION, new.contact_id, "w4") == "delivered"

    assert world.engage_consent() == "withdrawn"
    state = world.delivery_state(new.contact_id)
    assert state is not None
    assert (state.attempts, state.next_attempt_at) == (0, None)
    assert state.delivered_event_id == world.event_id(new)
    assert world.outbox(new).status == "delivered"
    assert world.outbox(old).status == "superseded"


def test_a_new_decision_that_also_fails_counts_another_attempt(world: World) -> None:
    failing = world.context(password="wrong-password")
    first = world.record("granted", occurred_at=hours_ago(1))
    deliver_contact(failing, DESTINATION, first.contact_id, "w1")
    second = world.record("denied")

    assert deliver_contact(failing, DESTINATION, second.contact_id, "w2") == "failed"

    state = world.delivery_state(second.contact_id)
    assert state is not None
    assert state.attempts == 2
    assert state.last_attempt_event_id == world.event_id(second)
    assert [r["status"] for r in world.requests()] == [403, 403]


def test_after_the_backoff_the_same_decision_is_retried(world: World) -> None:
    clock = Clock()
    recorded = world.record("denied")
    failing = world.context(password="wrong-password", clock=clock)
    assert deliver_contact(failing, DESTINATION, recorded.contact_id, "w1") == "failed"
    clock.advance(1.2 * SETTINGS.first_retry_seconds + 0.01)

    assert deliver_contact(world.context(clock=clock), DESTINATION, recorded.contact_id, "w2") == (
        "delivered"
    )
    assert world.engage_consent() == "denied"


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    settings = DeliverySettings(first_retry_seconds=5.0, max_retry_seconds=3600.0)
    samples = {n: [backoff_seconds(n, settings) for _ in range(400)] for n in range(1, 13)}
    for attempts, values in samples.items():
        if attempts > 10:
            continue  # at the cap: checked below
        base = min(5.0 * 2 ** (attempts - 1), 3600.0)
        assert min(values) >= 0.8 * base
        assert max(values) <= 1.2 * base
        # Jitter is real (not a constant) and spread over most of the ±20% band.
        assert min(values) < 0.9 * base
        assert max(values) > 1.1 * base
        assert statistics.mean(values) == pytest.approx(base, rel=0.05)
    # Exponential until the cap: every sample of attempt n+1 exceeds every sample of n.
    for attempts in range(1, 10):
        assert min(samples[attempts + 1]) > max(samples[attempts])
    # Attempt 11 would be 5120 s: capped at max_retry_seconds, still jittered below the cap.
    for attempts in (11, 12):
        assert all(0.8 * 3600.0 <= v <= 3600.0 for v in samples[attempts])
        assert min(samples[attempts]) < 0.9 * 3600.0


@pytest.mark.parametrize("attempts", [31, 64, 1000, 10**9])
def test_backoff_for_huge_attempt_counts_stays_capped(attempts: int) -> None:
    settings = DeliverySettings(first_retry_seconds=5.0, max_retry_seconds=600.0)
    value = backoff_seconds(attempts, settings)
    assert 0.8 * 600.0 <= value <= 600.0


def test_backoff_respects_small_settings() -> None:
    settings = DeliverySettings(first_retry_seconds=1.0, max_retry_seconds=4.0)
    values = [backoff_seconds(n, settings) for n in (1, 2, 3, 4, 5) for _ in range(50)]
    assert all(0.8 <= v <= 4.0 for v in values)
    assert all(0.8 * 4.0 <= backoff_seconds(5, settings) <= 4.0 for _ in range(50))


# --- the sweeper --------------------------------------------------------------------------------


@dataclass
class Published:
    calls: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, destination: str, contact_id: int) -> None:
        self.calls.append((destination, contact_id))


def test_sweeper_publishes_pending_rows_after_the_grace_period(world: World) -> None:
    recorded = world.record("denied")
    clock = Clock(world.outbox(recorded).created_at)
    ctx = world.context(clock=clock)
    published = Published()

    assert sweep(ctx, published) == 0  # the intake's own message gets a head start
    clock.advance(FRESH_GRACE.total_seconds() - 0.5)
    assert sweep(ctx, published) == 0
    clock.advance(1.0)
    assert sweep(ctx, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)]
    state = world.delivery_state(recorded.contact_id)
    assert state is not None and state.dispatched_at == clock.now

    # Not again within redispatch_after_seconds...
    clock.advance(SETTINGS.redispatch_after_seconds - 1)
    assert sweep(ctx, published) == 0
    assert len(published.calls) == 1
    # ...but again once it has passed and the row is still pending.
    clock.advance(2)
    assert sweep(ctx, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)] * 2
    assert world.requests() == []  # the sweeper itself never writes to Engage


def test_sweeper_publishes_each_contact_once(world: World) -> None:
    a1 = world.record("granted", occurred_at=hours_ago(2))
    world.record("denied", occurred_at=hours_ago(1))
    b = world.record("granted", email="someone.else@example.com")
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    published = Published()

    assert sweep(world.context(clock=clock), published) == 2
    assert sorted(published.calls) == sorted(
        [(DESTINATION, a1.contact_id), (DESTINATION, b.contact_id)]
    )


def test_sweeper_batch_size_limits_one_sweep(world: World) -> None:
    world.record("granted", email="a@example.com")
    world.record("granted", email="b@example.com")
    world.record("granted", email="c@example.com")
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    ctx = world.context(clock=clock, settings=DeliverySettings(sweep_batch_size=2))
    published = Published()

    assert sweep(ctx, published) == 2
    assert sweep(ctx, published) == 1  # the rest, since the first two were just dispatched
    assert len(set(published.calls)) == 3


def test_sweeper_skips_a_contact_whose_lease_is_held(world: World) -> None:
    recorded = world.record("denied")
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    world.set_state(
        recorded.contact_id,
        lease_owner="busy-worker",
        lease_expires_at=clock.now + dt.timedelta(seconds=60),
    )
    ctx = world.context(clock=clock)
    published = Published()

    assert sweep(ctx, published) == 0
    clock.advance(59)
    assert sweep(ctx, published) == 0
    clock.advance(2)  # the lease has expired: a crashed worker's contact is picked up
    assert sweep(ctx, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)]


def test_sweeper_waits_for_next_attempt_at(world: World) -> None:
    clock = Clock(utcnow() + dt.timedelta(seconds=10))
    recorded = world.record("denied")
    failing = world.context(password="wrong-password", clock=clock)
    assert deliver_contact(failing, DESTINATION, recorded.contact_id, "w") == "failed"
    state = world.delivery_state(recorded.contact_id)
    assert state is not None and state.next_attempt_at is not None
    published = Published()

    assert sweep(failing, published) == 0
    clock.now = state.next_attempt_at - dt.timedelta(milliseconds=10)
    assert sweep(failing, published) == 0
    clock.now = state.next_attempt_at
    assert sweep(failing, published) == 1
    assert published.calls == [(DESTINATION, recorded.contact_id)]


def test_sweeper_never_publishes_delivered_or_superseded_rows(world: World) -> None:
    old = world.record("granted", occurred_at=hours_ago(2))
    new = world.record("denied", occurred_at=hours_ago(1))
    assert deliver_contact(world.context(), DESTINATION, new.contact_id, "w") == "delivered"
    assert {world.outbox(old).status, world.outbox(new).status} == {"superseded", "delivered"}
    clock = Clock(utcnow())
    ctx = world.context(clock=clock)
    published = Published()

    for _ in range(3):
        clock.advance(3600)
        assert sweep(ctx, published) == 0
    assert published.calls == []
