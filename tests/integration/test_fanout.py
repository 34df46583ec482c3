"""One decision, four destinations: intake -> ledger -> real Celery worker -> the Engage
emulator and the three peer emulators over HTTP, each destination with its own delivery
state; and a backlog for Acoustic Connect written in batches by the sweeper's batch task.
Nothing of ours is mocked."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from relay.config.loader import load_settings
from relay.domain import Decision
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import DeliveryAttempt, DeliveryState, Event, Outbox
from relay.ledger.record import record_decision
from service import create_app
from tests.helpers.peer_support import Peers, contact, peer_emulators, peer_tables, state
from tests.helpers.support import (
    FAST_DELIVERY,
    celery_beat,
    celery_worker,
    decision,
    emulator_contact,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
NAMES = ("engage", "acoustic", "dotdigital", "moengage")


@dataclass
class FanOut:
    config: Path
    workdir: Path
    engage: str
    peers: Peers
    client: Any
    app: Any

    def send(self, body: bytes) -> Any:
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        return self.client.post("/webhooks/signup", data=body, headers=headers)

    def sessions(self) -> Any:
        return self.app.extensions["consent_relay"].sessions()

    def outbox(self, email: str) -> dict[str, list[str]]:
        with self.sessions() as session:
            rows = session.execute(
                select(Outbox.destination, Outbox.status)
                .join(Event, Event.id == Outbox.event_id)
                .where(Event.email == email)
                .order_by(Event.id)
            )
            result: dict[str, list[str]] = {}
            for destination, status in rows:
                result.setdefault(destination, []).append(status)
            return result


@pytest.fixture(scope="module", params=["embedded", "postgres-redis"])
def fanout(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FanOut]:
    database_url = broker_url = None
    if request.param == "postgres-redis":
        database_url = request.getfixturevalue("postgres_url")
        broker_url = request.getfixturevalue("redis_url")
    workdir = tmp_path_factory.mktemp(f"fanout-{request.param}")
    with peer_emulators() as peers:
        config = write_config(
            workdir / "consent-relay.toml",
            data_dir=workdir / "var",
            engage_url=engage,
            database_url=database_url,
            broker_url=broker_url,
            queue=f"cr-fanout-{uuid.uuid4().hex[:8]}",
            delivery=FAST_DELIVERY,
            extra=peer_tables(peers, moengage={"mode": "channel_consent"}),
        )
        settings = load_settings(config, environ={})
        upgrade(make_engine(settings.database_url))
        app = create_app({"SETTINGS": settings, "TESTING": True})
        worker = celery_worker(config, workdir)
        try:
            yield FanOut(config, workdir, engage, peers, app.test_client(), app)
        finally:
            worker.stop()


def _email() -> str:
    return f"Fan.{uuid.uuid4().hex[:8]}+Out@Example.com"


def test_one_decision_reaches_all_four_in_their_documented_form(fanout: FanOut) -> None:
    email = _email()
    assert fanout.send(decision(email, "withdrawn", source_id="pc-7")).status_code == 202
    wait_for(lambda: all(s == ["delivered"] for s in fanout.outbox(email).values()), 60, "all four")
    assert set(fanout.outbox(email)) == set(NAMES)
    engage = emulator_contact(fanout.engage, email)["attributes"]
    assert engage["tracking_consent"] == "withdrawn"
    evidence = {
        "tracking_consent": "withdrawn",
        "tracking_consent_source": "registration_form",
        "tracking_consent_source_id": "pc-7",
    }
    assert contact(fanout.peers.acoustic, email)["fields"] == evidence
    assert contact(fanout.peers.dotdigital, email)["fields"] == {
        key.upper(): value for key, value in evidence.items()
    }
    moengage = contact(fanout.peers.moengage, email)
    assert moengage["channel"] == "OPTED_OUT"  # channel_consent: lossy, denied looks the same
    with fanout.sessions() as session:
        states = session.scalars(
            select(DeliveryState)
            .join(Event, Event.contact_id == DeliveryState.contact_id)
            .where(Event.email == email)
        ).all()
        assert {s.destination for s in states} == set(NAMES)
        assert all(s.delivered_event_id is not None for s in states)
        details = session.scalars(
            select(DeliveryAttempt.detail).where(DeliveryAttempt.destination == "moengage")
        ).all()
    assert any(d and "withdrawn written as OPTED_OUT (lossy" in d for d in details)


def test_unknown_is_not_written_to_moengage_and_says_so(fanout: FanOut) -> None:
    email = _email()
    assert fanout.send(decision(email, "unknown")).status_code == 202
    wait_for(lambda: all(s == ["delivered"] for s in fanout.outbox(email).values()), 60, "settled")
    assert contact(fanout.peers.moengage, email) is None  # not even looked up
    with fanout.sessions() as session:
        attempt = session.execute(
            select(DeliveryAttempt.outcome, DeliveryAttempt.detail)
            .join(Event, Event.id == DeliveryAttempt.event_id)
            .where(Event.email == email, DeliveryAttempt.destination == "moengage")
        ).one()
    assert tuple(attempt) == ("not_written", "not written: unknown has no MoEngage value")


def test_an_acoustic_backlog_is_written_in_batches(fanout: FanOut) -> None:
    """Recorded but never published (lost messages): beat's sweeper batches Acoustic."""
    emails = [_email() for _ in range(12)]
    before = state(fanout.peers.acoustic)["requests_total"]
    with fanout.sessions() as session:
        for i, email in enumerate(emails):
            for m, consent in enumerate(("granted", "denied")):
                record_decision(
                    session,
                    source_name="signup",
                    delivery_id=f"lost-{uuid.uuid4().hex}",
                    webhook_timestamp=0,
                    body_sha256="0" * 64,
                    decision=Decision(
                        email,
                        consent,
                        "registration_form",
                        str(i),
                        T0 + dt.timedelta(minutes=m),
                    ),
                    destinations=["acoustic"],
                )
    beat = celery_beat(fanout.config, fanout.workdir)
    try:
        wait_for(
            lambda: all(
                fanout.outbox(e)["acoustic"] == ["superseded", "delivered"] for e in emails
            ),
            60,
            "the backlog delivered",
        )
    finally:
        beat.stop()
    for email in emails:
        assert contact(fanout.peers.acoustic, email)["fields"]["tracking_consent"] == "denied"
    calls = state(fanout.peers.acoustic)["requests_total"] - before
    assert calls < len(emails) / 2, calls  # a few mutations, not one per contact
