"""Delivery lanes through a real worker (relay/messaging/lanes.py), on every broker we ship:

- a slow destination does not set a fast one's pace: Engage (10/s) delivers its contacts while
  Dotdigital (2 calls/s, two calls a contact) has delivered only a few of the same contacts;
- a withdrawal overtakes a backlog of grants bound for the same destination;
- writes the pace refused come back by themselves at their turns (workers/ratelimit/turns.py),
  with no sweeper running at all.

Both are ordering checks, not timings: "Engage finished while Dotdigital had done fewer than
N", "the withdrawal was delivered while at least N grants still waited". Figures (drain-time
ratio, withdrawal latency) are measured in `make bench`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from emulators import dotdigital
from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import DeliveryState, Outbox
from service import create_app
from tests.helpers.peer_support import PeerProcess, state
from tests.helpers.support import (
    FAST_DELIVERY,
    Emulator,
    celery_beat,
    celery_worker,
    decision,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
BROKERS = ["embedded", "redis", "rabbitmq"]


@dataclass
class Lanes:
    app: Any
    engage: Emulator
    processes: list[Any]

    def send(self, email: str, consent: str) -> None:
        body = decision(email, consent, occurred_at=dt.datetime.now(dt.UTC))
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        client = self.app.test_client()
        assert client.post("/webhooks/signup", data=body, headers=headers).status_code == 202

    def delivered(self, destination: str) -> int:
        with self.app.extensions["consent_relay"].sessions() as session:
            query = select(func.count()).where(
                DeliveryState.destination == destination,
                DeliveryState.delivered_event_id.is_not(None),
            )
            return int(session.scalar(query) or 0)

    def pending(self, destination: str) -> int:
        with self.app.extensions["consent_relay"].sessions() as session:
            query = select(func.count(func.distinct(Outbox.contact_id))).where(
                Outbox.destination == destination, Outbox.status == "pending"
            )
            return int(session.scalar(query) or 0)


def violations(state: dict[str, Any]) -> int:
    return int(state["faults"]["counters"]["rate_limit_violations"])


@pytest.fixture
def lanes_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    started: list[Any] = []

    def start(
        broker: str,
        extra: str = "",
        delivery: dict[str, Any] | None = None,
        destination: dict[str, Any] | None = None,
        beat: bool = True,
    ) -> Lanes:
        database = broker_url = None
        if broker != "embedded":
            database = request.getfixturevalue("own_postgres_url")
            broker_url = request.getfixturevalue("redis_url" if broker == "redis" else "rabbit_url")
        engage = Emulator(tmp_path, "--rate-limit", "10", "--latency-ms", "50")
        started.append(engage.process)
        config = write_config(
            tmp_path / "consent-relay.toml",
            data_dir=tmp_path / "var",
            engage_url=engage.url,
            database_url=database,
            broker_url=broker_url,
            queue=f"cr-lanes-{uuid.uuid4().hex[:8]}",
            delivery=delivery or FAST_DELIVERY,
            destination=destination,
            extra=extra,
        )
        settings = load_settings(config, environ={})
        upgrade(make_engine(settings.database_url))
        app = create_app({"SETTINGS": settings, "TESTING": True})
        started.append(celery_worker(config, tmp_path))  # 2 processes, as the Procfile
        if beat:
            started.append(celery_beat(config, tmp_path))
        return Lanes(app, engage, started)

    yield start
    for process in reversed(started):
        process.stop()


@pytest.mark.parametrize("broker", BROKERS)
def test_a_slow_destination_does_not_set_engages_pace(
    lanes_for: Any, tmp_path: Path, broker: str
) -> None:
    slow = PeerProcess("dotdigital", tmp_path, "--any-contact", "--rate-limit", "2")
    try:
        table = (
            '[destinations.dotdigital]\nkind = "dotdigital"\n'
            f'base_url = "{slow.url}"\nusername = "{dotdigital.USERNAME}"\n'
            f'password = "{dotdigital.PASSWORD}"\nrate_limit_per_second = 2\n'
        )
        lanes = lanes_for(broker, table)
        contacts = 60
        for i in range(contacts):
            lanes.send(f"lane.{i}.{broker}@example.com", "granted")
        wait_for(lambda: lanes.delivered("engage") == contacts, 90, "Engage's 60 contacts")
        # Dotdigital needs two calls a contact at 2 calls/s: about a minute for all of them.
        # Had Engage waited on its pace, Dotdigital would be about as far along.
        assert lanes.delivered("dotdigital") < contacts / 2
        assert violations(lanes.engage.state()) == 0
        assert violations(state(slow.url)) == 0
    finally:
        slow.stop()


@pytest.mark.parametrize("broker", BROKERS)
def test_a_withdrawal_overtakes_a_backlog_of_grants(lanes_for: Any, broker: str) -> None:
    lanes = lanes_for(broker)
    backlog = 300  # 30 s of Engage's pace
    for i in range(backlog):
        lanes.send(f"grant.{i}.{broker}@example.com", "granted")
    wait_for(lambda: lanes.delivered("engage") >= 10, 60, "the backlog under way")
    lanes.send(f"withdraws.{broker}@example.com", "withdrawn")
    wait_for(lambda: _withdrawal_delivered(lanes, broker), 60, "the withdrawal delivered")
    assert lanes.pending("engage") >= backlog / 2, "the withdrawal waited behind the grants"
    assert violations(lanes.engage.state()) == 0


def _withdrawal_delivered(lanes: Lanes, broker: str) -> bool:
    contact = lanes.engage.state()["contacts"].get(f"withdraws.{broker}@example.com")
    return bool(contact) and contact["attributes"].get("tracking_consent") == "withdrawn"


@pytest.mark.parametrize("broker", BROKERS)
def test_refused_writes_come_back_without_a_sweeper(lanes_for: Any, broker: str) -> None:
    """Engage paced at 2 calls/s (two calls a new contact), twelve contacts at once, and no
    beat: the writes the pace refuses can only come back through their own countdown messages.
    Before turns they waited for a sweep, which never comes here."""
    never = {**FAST_DELIVERY, "sweep_interval_seconds": 3600, "redispatch_after_seconds": 3600}
    slow = {"rate_limit_per_second": 2}
    lanes = lanes_for(broker, delivery=never, destination=slow, beat=False)
    contacts = 12
    for i in range(contacts):
        consent = "withdrawn" if i % 4 == 0 else "granted"
        lanes.send(f"turn.{i}.{broker}@example.com", consent)
    wait_for(lambda: lanes.delivered("engage") == contacts, 90, "every contact, no sweeps")
    assert lanes.pending("engage") == 0
    assert violations(lanes.engage.state()) == 0
