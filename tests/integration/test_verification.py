"""Read-back verification and drift repair through a real worker and beat, a real broker and
ledger (Redis and PostgreSQL, or the embedded broker and SQLite), and the Engage and
Dotdigital emulators in their own processes (docs/delivery/verification.md).

The issue's "done when": drift injected at the Engage emulator and at a peer emulator (their
out-of-band edit, as an import or a UI edit makes it) is found and repaired within the
configured interval, while fresh decisions keep flowing at the rate limit with 0 violations.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from emulators import dotdigital
from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import Contact, DeliveryState, Verification
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
INTERVAL = 4  # [verification] interval_seconds: every delivered decision read back this often
VERIFICATION = f"[verification]\nafter_write_seconds = 1\ninterval_seconds = {INTERVAL}\n"


@dataclass
class World:
    app: Any
    engage: Emulator
    dotdigital: PeerProcess

    def send(self, email: str, consent: str) -> None:
        body = decision(email, consent, occurred_at=dt.datetime.now(dt.UTC))
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        response = self.app.test_client().post("/webhooks/signup", data=body, headers=headers)
        assert response.status_code == 202

    def sessions(self) -> Any:
        return self.app.extensions["consent_relay"].sessions()

    def delivered(self, destination: str) -> int:
        with self.sessions() as session:
            query = select(func.count()).where(
                DeliveryState.destination == destination,
                DeliveryState.delivered_event_id.is_not(None),
            )
            return int(session.scalar(query) or 0)

    def verification(self, destination: str, email: str) -> Verification | None:
        with self.sessions() as session:
            contact_id = session.scalar(select(Contact.id).where(Contact.email_key == email))
            return session.get(Verification, (destination, contact_id))

    def verified(self, destination: str, email: str) -> bool:
        row = self.verification(destination, email)
        return row is not None and row.status == "verified"


def violations(snapshot: dict[str, Any]) -> int:
    return int(snapshot["faults"]["counters"]["rate_limit_violations"])


@pytest.fixture
def world_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    started: list[Any] = []

    def start(broker: str) -> World:
        database = broker_url = None
        if broker == "redis":
            database = request.getfixturevalue("own_postgres_url")
            broker_url = request.getfixturevalue("redis_url")
        engage = Emulator(tmp_path, "--rate-limit", "10", "--latency-ms", "20")
        started.append(engage.process)
        peer = PeerProcess("dotdigital", tmp_path, "--any-contact", "--rate-limit", "10")
        started.append(peer.process)
        table = (
            '[destinations.dotdigital]\nkind = "dotdigital"\n'
            f'base_url = "{peer.url}"\nusername = "{dotdigital.USERNAME}"\n'
            f'password = "{dotdigital.PASSWORD}"\nrate_limit_per_second = 10\n'
            "verify_share = 0.2\n"
        )
        config = write_config(
            tmp_path / "consent-relay.toml",
            data_dir=tmp_path / "var",
            engage_url=engage.url,
            database_url=database,
            broker_url=broker_url,
            queue=f"cr-verify-{uuid.uuid4().hex[:8]}",
            delivery=FAST_DELIVERY,
            destination={"verify_share": 0.2},
            extra=table + "\n" + VERIFICATION,
        )
        settings = load_settings(config, environ={})
        upgrade(make_engine(settings.database_url))
        app = create_app({"SETTINGS": settings, "TESTING": True})
        started.append(celery_worker(config, tmp_path))
        started.append(celery_beat(config, tmp_path))
        return World(app, engage, peer)

    yield start
    for process in reversed(started):
        process.stop()


def edit_engage(world: World, email: str, consent: str) -> None:
    url = f"{world.engage.url}/_emulator/contacts/{email}/edit"
    response = requests.post(url, json={"attributes": {"tracking_consent": consent}}, timeout=5)
    assert response.status_code == 200, response.text


def edit_dotdigital(world: World, email: str, consent: str) -> None:
    url = f"{world.dotdigital.url}/_emulator/contacts/{email}/edit"
    response = requests.post(url, json={"fields": {"TRACKING_CONSENT": consent}}, timeout=5)
    assert response.status_code == 200, response.text


def dotdigital_consent(world: World, email: str) -> str | None:
    contact = state(world.dotdigital.url)["contacts"].get(email)
    return None if contact is None else contact["fields"].get("TRACKING_CONSENT")


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_drift_is_found_and_repaired_while_fresh_decisions_flow(
    world_for: Any, broker: str
) -> None:
    world = world_for(broker)
    first = [f"verify.{i}.{broker}@example.com" for i in range(6)]
    for email in first:
        world.send(email, "denied")
    wait_for(lambda: world.delivered("engage") == len(first), 30, "the first decisions")
    target = first[0]
    for destination in ("engage", "dotdigital"):
        wait_for(lambda d=destination: world.verified(d, target), 30, f"{destination} read back")

    # A steady stream of fresh decisions, at Engage's pace, while the drift is injected.
    fresh = [f"fresh.{i}.{broker}@example.com" for i in range(60)]
    feeder = threading.Thread(target=lambda: _feed(world, fresh, 10.0))
    feeder.start()
    edit_engage(world, target, "granted")  # an import overwrote the denial
    edit_dotdigital(world, target, "granted")
    injected = time.monotonic()
    wait_for(
        lambda: world.engage.consent(world.engage.state(), target) == "denied",
        60,
        "Engage repaired",
    )
    wait_for(lambda: dotdigital_consent(world, target) == "denied", 60, "Dotdigital repaired")
    repaired_in = time.monotonic() - injected
    feeder.join()

    for destination in ("engage", "dotdigital"):
        row = world.verification(destination, target)
        assert row is not None and row.drifts >= 1 and row.last_drift_seen == "granted"
    # Found within the read-back interval, plus the time the share of the pace takes to reach
    # the contact among the others and a sweep or two.
    assert repaired_in < INTERVAL + 30
    wait_for(lambda: world.delivered("engage") == len(first) + len(fresh), 60, "the fresh ones")
    engage_calls = world.engage.state()["counts"]
    assert engage_calls["get"] >= 2 and engage_calls["edit"] == 1
    assert violations(world.engage.state()) == 0
    assert violations(state(world.dotdigital.url)) == 0


def _feed(world: World, emails: list[str], per_second: float) -> None:
    for email in emails:
        world.send(email, "granted")
        time.sleep(1 / per_second)
