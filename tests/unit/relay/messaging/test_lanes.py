"""Delivery lanes (relay/messaging/lanes.py), the sweeper's order and budgets, and the publisher's
urgent messages."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import replace
from pathlib import Path

from relay.domain import Decision
from relay.ledger.models import utcnow
from relay.ledger.record import record_decision
from relay.messaging.lanes import delivery_lanes, delivery_queue, is_urgent, recovery_queue
from relay.messaging.names import DELIVER_TASK
from service.intake.publisher import Publisher, Queued
from tests.helpers.delivery_world import DESTINATION, DeliveryWorld, Published
from tests.helpers.support import minimal_celery
from workers.delivery.contact import DeliveryContext
from workers.delivery.sweeper import sweep


def test_withdrawals_and_denials_are_urgent_grants_are_not() -> None:
    assert is_urgent("withdrawn") and is_urgent("denied")
    assert not is_urgent("granted") and not is_urgent("unknown") and not is_urgent(None)


def test_each_destination_has_an_urgent_and_a_bulk_lane() -> None:
    assert delivery_lanes("cr", ["engage", "acoustic"]) == [
        "cr.acoustic.urgent",
        "cr.acoustic.bulk",
        "cr.engage.urgent",
        "cr.engage.bulk",
    ]
    assert delivery_queue("cr", "engage", urgent=True) == "cr.engage.urgent"


def _record_for(delivery_world: DeliveryWorld, email: str, destinations: list[str]) -> int:
    with delivery_world.ledger.sessions() as session:
        recorded = record_decision(
            session,
            source_name="signup",
            delivery_id=f"msg_{uuid.uuid4().hex}",
            webhook_timestamp=int(utcnow().timestamp()),
            body_sha256=hashlib.sha256(email.encode()).hexdigest(),
            decision=Decision(email, "granted", "form", source_id=None, occurred_at=None),
            destinations=destinations,
        )
    return recorded.contact_id


def test_one_destinations_backlog_does_not_crowd_another_out_of_a_sweep(
    delivery_world: DeliveryWorld,
) -> None:
    """Each destination is swept within its own budget, whatever the other's backlog."""
    for i in range(6):  # the older backlog, of the slow destination only
        _record_for(delivery_world, f"old{i}@example.com", ["slow"])
    fresh = _record_for(delivery_world, "fresh@example.com", [DESTINATION])
    base = delivery_world.context(clock=lambda: utcnow() + dt.timedelta(seconds=5))
    writers = {**base.writers, "slow": base.writers[DESTINATION]}
    settings = replace(base.settings, sweep_batch_size=4)
    ctx = DeliveryContext(base.sessions, writers, settings, base.clock, {"slow": 2})
    published = Published()

    assert sweep(ctx, published) == 3
    assert (DESTINATION, fresh) in published.calls  # not left behind the slow backlog
    assert sum(1 for d, _c in published.calls if d == "slow") == 2  # its budget


def test_the_sweeper_sends_withdrawals_first_and_in_their_lane(
    delivery_world: DeliveryWorld,
) -> None:
    granted = [delivery_world.record("granted", email=f"g{i}@example.com") for i in range(3)]
    withdrawn = delivery_world.record("withdrawn", email="w@example.com")
    later = delivery_world.context(clock=lambda: utcnow() + dt.timedelta(seconds=5))
    published = Published()
    budgeted = DeliveryContext(
        later.sessions, later.writers, later.settings, later.clock, {DESTINATION: 2}
    )

    assert sweep(budgeted, published) == 2  # the budget: two contacts of this destination
    assert published.calls[0] == (DESTINATION, withdrawn.contact_id)
    assert published.urgent == [(DESTINATION, withdrawn.contact_id)]
    assert published.calls[1] == (DESTINATION, granted[0].contact_id)  # then the oldest


def test_urgent_deliveries_go_alone_to_their_lane_the_rest_coalesce(tmp_path: Path) -> None:
    celery = minimal_celery(tmp_path, queue="cr")
    items = [
        Queued("engage", 1, "r1"),
        Queued("engage", 2, "r2", urgent=True),
        Queued("engage", 3, "r3"),
    ]
    assert Publisher(celery).publish_queued(items) == 2
    messages = sorted((tmp_path / "var" / "broker").glob("*.msg"))
    found = {}
    for path in messages:
        message = json.loads(path.read_text())
        args = json.loads(base64.b64decode(message["body"]))[0]
        found[message["properties"]["delivery_info"]["routing_key"]] = (
            message["headers"]["task"],
            args,
        )
    assert found["cr.engage.urgent"] == ("consent_relay.deliver_contact", ["engage", 2])
    task, args = found["cr"]
    assert task == "consent_relay.dispatch"
    assert args == [[["engage", 1, "r1"], ["engage", 3, "r3"]]]


def test_a_lost_runs_work_has_a_queue_of_its_own_that_workers_consume(tmp_path: Path) -> None:
    # workers/lost.py re-sends there: at the back of a busy lane it would wait for the lane.
    celery = minimal_celery(tmp_path, queue="cr")
    assert recovery_queue("cr") == "cr.recover"
    assert "cr.recover" in {queue.name for queue in celery.conf.task_queues}
    celery.send_task(DELIVER_TASK, args=["engage", 7], queue=recovery_queue("cr"))
    (path,) = (tmp_path / "var" / "broker").glob("*.msg")
    message = json.loads(path.read_text())
    assert message["properties"]["delivery_info"]["routing_key"] == "cr.recover"
