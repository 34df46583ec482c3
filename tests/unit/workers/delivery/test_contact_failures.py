"""Failed writes through `deliver_contact`: retry later, dead-letter, or pause the destination.

Transient and auth failures come from the Engage emulator's runtime faults over real HTTP;
answers it has no fault for (a 400 other than a missing contact) come from `Scripted`, which
raises the client's own typed errors before handing over to the real client.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from relay.config.settings import DeliverySettings
from relay.domain import ConsentWrite
from relay.ledger import dead_letters
from relay.ledger import pauses as destinations
from tests.helpers.delivery_world import (
    DESTINATION,
    KEY,
    SETTINGS,
    Clock,
    DeliveryWorld,
    Published,
    hours_ago,
)
from workers.delivery.contact import DeliveryContext, deliver_contact
from workers.delivery.sweeper import probe_destination, schedule_probes, sweep
from workers.destinations.engage import EngageClient
from workers.destinations.errors import DeliveryError, RejectedError
from workers.ratelimit.pace import ThrottledError

REJECTED_BODY = '{"errorActor":"CLIENT","errorCode":"INVALID_PARAMETER","message":"bad value"}'


class Scripted:
    """Raises the queued errors in turn, then writes through the real client."""

    def __init__(self, client: EngageClient, *errors: Exception) -> None:
        self.client = client
        self.errors = list(errors)
        self.writes = 0

    def write(self, write: ConsentWrite) -> int:
        self.writes += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.client.write(write)

    def probe(self) -> int:
        return self.client.probe()


def rejected() -> RejectedError:
    return RejectedError("Engage answered rejected", status=400, body=REJECTED_BODY)


def seconds_until(moment: dt.datetime | None, now: dt.datetime) -> float:
    assert moment is not None
    return (moment - now).total_seconds()


def test_a_5xx_records_the_attempt_and_waits_the_first_step(delivery_world: DeliveryWorld) -> None:
    delivery_world.faults(error_rate=1.0, error_status=503)
    clock = Clock()
    recorded = delivery_world.record("denied")

    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, recorded.contact_id, "w"
    ) == ("failed")

    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert (state.attempts, state.rejections, state.last_status) == (1, 0, 503)
    assert 4.0 <= seconds_until(state.next_attempt_at, clock.now) <= 6.0
    assert state.failing_since == clock.now
    assert state.lease_owner is None and state.delivered_event_id is None
    [attempt] = delivery_world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("transient", 503)
    assert delivery_world.outbox(recorded).status == "pending"
    assert delivery_world.dead_letters() == []


def test_an_unreachable_destination_is_transient(delivery_world: DeliveryWorld) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    recorded = delivery_world.record("denied")
    dest = delivery_world.destination(base_url=f"http://127.0.0.1:{port}")
    ctx = DeliveryContext(
        delivery_world.ledger.sessions, {DESTINATION: EngageClient(dest)}, SETTINGS
    )

    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "failed"

    [attempt] = delivery_world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("transient", None)


def test_the_same_decision_waits_out_its_backoff_but_a_new_one_goes_at_once(
    delivery_world: DeliveryWorld,
) -> None:
    delivery_world.faults(error_rate=1.0)
    old = delivery_world.record("granted", occurred_at=hours_ago(1))
    assert deliver_contact(delivery_world.context(), DESTINATION, old.contact_id, "w1") == "failed"
    delivery_world.faults(error_rate=0.0)
    requests_after_failure = delivery_world.requests()

    assert deliver_contact(delivery_world.context(), DESTINATION, old.contact_id, "w2") == "waiting"
    assert delivery_world.requests() == requests_after_failure
    new = delivery_world.record("withdrawn")
    assert (
        deliver_contact(delivery_world.context(), DESTINATION, new.contact_id, "w3") == "delivered"
    )

    assert delivery_world.engage_consent() == "withdrawn"
    state = delivery_world.delivery_state(new.contact_id)
    assert state is not None
    assert (state.attempts, state.next_attempt_at, state.failing_since) == (0, None, None)
    assert delivery_world.outbox(old).status == "superseded"


def test_each_decision_gets_its_own_schedule(delivery_world: DeliveryWorld) -> None:
    delivery_world.faults(error_rate=1.0)
    clock = Clock()
    first = delivery_world.record("granted", occurred_at=hours_ago(1))
    ctx = delivery_world.context(clock=clock)
    deliver_contact(ctx, DESTINATION, first.contact_id, "w1")
    clock.advance(6)
    deliver_contact(ctx, DESTINATION, first.contact_id, "w2")
    state = delivery_world.delivery_state(first.contact_id)
    assert state is not None and state.attempts == 2
    assert 24 <= seconds_until(state.next_attempt_at, clock.now) <= 36  # second step: 30 s

    second = delivery_world.record("denied")
    assert deliver_contact(ctx, DESTINATION, second.contact_id, "w3") == "failed"

    state = delivery_world.delivery_state(second.contact_id)
    assert state is not None
    assert (state.attempts, state.failing_since) == (1, clock.now)
    assert state.last_attempt_event_id == delivery_world.event_id(second)
    assert 4 <= seconds_until(state.next_attempt_at, clock.now) <= 6


def test_after_the_backoff_the_same_decision_is_retried(delivery_world: DeliveryWorld) -> None:
    delivery_world.faults(error_rate=1.0)
    clock = Clock()
    recorded = delivery_world.record("denied")
    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, recorded.contact_id, "w1"
    ) == ("failed")
    delivery_world.faults(error_rate=0.0)
    clock.advance(6.01)

    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, recorded.contact_id, "w2"
    ) == ("delivered")
    assert delivery_world.engage_consent() == "denied"


def test_a_rejected_write_is_retried_then_dead_lettered_with_the_evidence(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    recorded = delivery_world.record("denied")
    writer = Scripted(
        EngageClient(delivery_world.destination()), rejected(), rejected(), rejected()
    )
    ctx = delivery_world.context(clock=clock, writer=writer)

    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w1") == "failed"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and (state.attempts, state.rejections) == (1, 1)
    assert 48 <= seconds_until(state.next_attempt_at, clock.now) <= 72
    clock.advance(73)
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w2") == "failed"
    clock.advance(145)
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w3") == "dead_lettered"

    [letter] = delivery_world.dead_letters()
    assert (letter.reason, letter.status, letter.last_status) == ("rejected", "open", 400)
    assert letter.last_body == REJECTED_BODY
    assert letter.attempts == 3 and letter.event_id == delivery_world.event_id(recorded)
    assert letter.first_failed_at is not None and letter.first_failed_at < letter.created_at
    assert [a.outcome for a in delivery_world.attempts(recorded.contact_id)] == ["rejected"] * 3
    assert delivery_world.outbox(recorded).status == "dead_lettered"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None and (state.attempts, state.next_attempt_at) == (0, None)
    # Given up: no more writes, and the sweeper leaves it alone.
    assert (
        deliver_contact(ctx, DESTINATION, recorded.contact_id, "w4") == "settled"
    )  # nothing pending
    assert writer.writes == 3 and delivery_world.requests() == []
    clock.advance(3600)
    published = Published()
    assert sweep(ctx, published) == 0


def dead_letter_latest(delivery_world: DeliveryWorld, clock: Clock, consent: str = "denied") -> Any:
    recorded = delivery_world.record(consent)
    ctx = delivery_world.context(
        clock=clock,
        settings=DeliverySettings(max_rejected_attempts=1),
        writer=Scripted(EngageClient(delivery_world.destination()), rejected()),
    )
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "dead_lettered"
    return recorded


def test_an_older_decision_arriving_after_a_dead_letter_is_not_written(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    newest = dead_letter_latest(delivery_world, clock)
    older = delivery_world.record("granted", occurred_at=hours_ago(2))

    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, older.contact_id, "w"
    ) == ("dead_lettered")

    assert delivery_world.requests() == []  # never regress to the older "granted"
    assert delivery_world.outbox(older).status == "superseded"
    assert delivery_world.outbox(older).settled_by_event_id == delivery_world.event_id(newest)
    assert [d.status for d in delivery_world.dead_letters()] == ["open"]


def test_a_newer_decision_is_delivered_and_supersedes_the_dead_letter(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    dead_letter_latest(delivery_world, clock)
    newer = delivery_world.record("withdrawn")

    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, newer.contact_id, "w"
    ) == ("delivered")

    assert delivery_world.engage_consent() == "withdrawn"
    [letter] = delivery_world.dead_letters()
    assert letter.status == "superseded" and letter.resolved_at == clock.now


def test_transient_failures_are_dead_lettered_after_the_max_age(
    delivery_world: DeliveryWorld,
) -> None:
    delivery_world.faults(error_rate=1.0, error_status=502)
    clock = Clock()
    settings = DeliverySettings(max_retry_age_seconds=3600)
    recorded = delivery_world.record("granted")
    ctx = delivery_world.context(clock=clock, settings=settings)
    outcomes = []
    for _ in range(4):
        outcomes.append(deliver_contact(ctx, DESTINATION, recorded.contact_id, "w"))
        clock.advance(1300)

    assert outcomes == ["failed", "failed", "failed", "dead_lettered"]
    [letter] = delivery_world.dead_letters()
    assert (letter.reason, letter.last_status, letter.attempts) == ("max_age", 502, 4)
    assert delivery_world.outbox(recorded).status == "dead_lettered"


def test_auth_failure_pauses_the_destination_without_spending_retries(
    delivery_world: DeliveryWorld,
) -> None:
    delivery_world.faults(auth_failure=403)
    clock = Clock()
    first = delivery_world.record("granted", occurred_at=hours_ago(1))
    ctx = delivery_world.context(clock=clock)

    assert deliver_contact(ctx, DESTINATION, first.contact_id, "w1") == "paused"
    other = delivery_world.record("denied", email="someone.else@example.com")
    assert deliver_contact(ctx, DESTINATION, other.contact_id, "w2") == "paused"

    assert len(delivery_world.requests()) == 1  # nothing more was sent once paused
    with delivery_world.ledger.sessions() as session:
        [view] = destinations.describe(session, [DESTINATION])
    assert (view.paused, view.paused_by, view.paused_status) == (True, "auth", 403)
    assert view.next_probe_at == clock.now + dt.timedelta(seconds=SETTINGS.probe_interval_seconds)
    state = delivery_world.delivery_state(first.contact_id)
    assert state is not None and (state.attempts, state.next_attempt_at) == (0, None)
    assert delivery_world.outbox(first).status == delivery_world.outbox(other).status == "pending"
    assert delivery_world.dead_letters() == []
    clock.advance(10)
    assert sweep(ctx, Published()) == 0  # no work for a paused destination


def test_a_probe_resumes_the_destination_once_credentials_work(
    delivery_world: DeliveryWorld,
) -> None:
    delivery_world.faults(auth_failure=401)
    clock = Clock()
    recorded = delivery_world.record("withdrawn")
    ctx = delivery_world.context(clock=clock)
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w1") == "paused"
    probes: list[str] = []

    assert schedule_probes(ctx, probes.append) == []  # not due yet
    clock.advance(SETTINGS.probe_interval_seconds)
    assert schedule_probes(ctx, probes.append) == [DESTINATION]
    assert schedule_probes(ctx, probes.append) == []  # claimed: one probe per interval
    assert probe_destination(ctx, DESTINATION) == "still_paused"
    delivery_world.faults(auth_failure=None)  # the operator fixed the account
    assert probe_destination(ctx, DESTINATION) == "resumed"

    clock.advance(5)
    published = Published()
    assert sweep(ctx, published) == 1
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w2") == "delivered"
    assert delivery_world.engage_consent() == "withdrawn"


def test_a_contact_not_yet_visible_after_its_create_is_retried_within_seconds(
    delivery_world: DeliveryWorld,
) -> None:
    delivery_world.faults(visibility_delay_seconds=30)
    clock = Clock()
    first = delivery_world.record("granted", occurred_at=hours_ago(1))
    ctx = delivery_world.context(clock=clock)
    assert deliver_contact(ctx, DESTINATION, first.contact_id, "w1") == "delivered"  # created
    second = delivery_world.record("denied")

    assert deliver_contact(ctx, DESTINATION, second.contact_id, "w2") == "failed"

    state = delivery_world.delivery_state(second.contact_id)
    assert state is not None
    assert 1.6 <= seconds_until(state.next_attempt_at, clock.now) <= 2.4
    assert delivery_world.attempts(second.contact_id)[-1].outcome == "not_visible"


def test_rate_limited_answers_are_retried_soon(delivery_world: DeliveryWorld) -> None:
    delivery_world.faults(rate_limit_per_second=1)
    clock = Clock()
    recorded = delivery_world.record("granted")
    ctx = delivery_world.context(clock=clock)

    # update (NO_SUCH_OBJECT), then create: the second call in a second is over the limit.
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w") == "failed"

    [attempt] = delivery_world.attempts(recorded.contact_id)
    assert (attempt.outcome, attempt.http_status) == ("rate_limited", 500)
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert 8 <= seconds_until(state.next_attempt_at, clock.now) <= 12


class Throttled:
    def write(self, write: ConsentWrite) -> int:
        raise ThrottledError(DESTINATION, 1.5, "no slot soon enough")

    def probe(self) -> int:
        raise DeliveryError("unused")


def test_no_rate_limit_slot_defers_without_counting_an_attempt(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    recorded = delivery_world.record("granted")

    outcome = deliver_contact(
        delivery_world.context(clock=clock, writer=Throttled()),
        DESTINATION,
        recorded.contact_id,
        "w",
    )

    assert outcome == "throttled"
    state = delivery_world.delivery_state(recorded.contact_id)
    assert state is not None
    assert (state.attempts, state.lease_owner) == (0, None)
    assert state.next_attempt_at == clock.now + dt.timedelta(seconds=1.5)
    assert delivery_world.attempts(recorded.contact_id) == []
    assert delivery_world.engage_consent(KEY) is None


def replay_all(delivery_world: DeliveryWorld, clock: Clock) -> list[int]:
    with delivery_world.ledger.sessions() as session:
        result = dead_letters.replay(session, replay_all=True, now=clock.now)
        session.commit()
    return sorted(result.replayed)


def test_a_replayed_dead_letter_is_delivered_by_the_worker(delivery_world: DeliveryWorld) -> None:
    clock = Clock()
    recorded = dead_letter_latest(delivery_world, clock, consent="withdrawn")
    [letter] = delivery_world.dead_letters()

    assert replay_all(delivery_world, clock) == [letter.id]
    assert delivery_world.outbox(recorded).status == "pending"
    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, recorded.contact_id, "w"
    ) == ("delivered")

    assert delivery_world.engage_consent() == "withdrawn"
    assert delivery_world.outbox(recorded).status == "delivered"
    assert [d.status for d in delivery_world.dead_letters()] == ["replayed"]
    assert replay_all(delivery_world, clock) == []  # idempotent: nothing open any more


def test_replaying_after_a_newer_decision_never_regresses_the_contact(
    delivery_world: DeliveryWorld,
) -> None:
    clock = Clock()
    old = delivery_world.record("granted", occurred_at=hours_ago(2))
    ctx = delivery_world.context(
        clock=clock,
        settings=DeliverySettings(max_rejected_attempts=1),
        writer=Scripted(EngageClient(delivery_world.destination()), rejected()),
    )
    assert deliver_contact(ctx, DESTINATION, old.contact_id, "w1") == "dead_lettered"
    # Dead-lettered, then replayed while a newer decision has arrived and been delivered...
    newer = delivery_world.record("denied", occurred_at=hours_ago(1))
    delivery_world.set_state(old.contact_id, next_attempt_at=None)
    with delivery_world.ledger.sessions() as session:
        letter_id = delivery_world.dead_letters()[0].id
        result = dead_letters.replay(session, ids=[letter_id], now=clock.now)
        session.commit()
    assert result.replayed == [letter_id]
    assert deliver_contact(
        delivery_world.context(clock=clock), DESTINATION, newer.contact_id, "w2"
    ) == ("delivered")

    # ...only the newer decision is written; the replayed row is settled as superseded.
    assert delivery_world.engage_consent() == "denied"
    assert [
        h["attributes"]["tracking_consent"]
        for h in delivery_world.state()["contacts"][KEY]["history"]
    ] == ["denied"]
    assert delivery_world.outbox(old).status == "superseded"
    assert delivery_world.outbox(newer).status == "delivered"
