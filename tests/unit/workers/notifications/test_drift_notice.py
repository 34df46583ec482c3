"""Drift found by a read-back (workers/verification/readback.py) is recorded as a notification
in the same transaction, with ids and consent values only."""

from __future__ import annotations

import json

import requests
from sqlalchemy import select

from relay.config.settings import VerificationSettings
from relay.ledger.models import Notification
from tests.helpers.delivery_world import DESTINATION, KEY, Clock, DeliveryWorld, Published
from workers.delivery.contact import deliver_contact
from workers.destinations.engage import EngageClient
from workers.verification.context import VerificationContext
from workers.verification.readback import verify_contacts


def test_drift_is_recorded_for_notification(delivery_world: DeliveryWorld) -> None:
    clock = Clock()
    recorded = delivery_world.record("withdrawn")
    contact = recorded.contact_id
    assert deliver_contact(delivery_world.context(clock=clock), DESTINATION, contact, "w") == (
        "delivered"
    )
    url = f"{delivery_world.emulator.url}/_emulator/contacts/{KEY}/edit"
    response = requests.post(url, json={"attributes": {"tracking_consent": "granted"}}, timeout=5)
    assert response.status_code == 200
    ctx = VerificationContext(
        delivery_world.ledger.sessions,
        {DESTINATION: EngageClient(delivery_world.destination())},
        {DESTINATION: "report"},
        VerificationSettings(enabled=True, after_write_seconds=1, interval_seconds=60),
        {DESTINATION: 10},
        30.0,
        clock,
    )
    assert verify_contacts(ctx, DESTINATION, [contact], Published()) == {"drift": 1}

    with delivery_world.ledger.sessions() as session:
        [row] = session.scalars(select(Notification)).all()
    assert (row.type, row.destination, row.contact_id) == ("drift.found", DESTINATION, contact)
    data = json.loads(row.data)
    assert data["seen"] == "granted" and data["expected"] == "withdrawn"
    assert data["action"] == "reported" and data["contact_id"] == contact
    assert "@" not in row.data
