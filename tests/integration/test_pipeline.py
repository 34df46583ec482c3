"""Intake -> ledger -> real Celery worker -> Engage emulator over HTTP, on each supported stack.

The web app runs in-process (the real app, ledger and broker publish); the worker and beat
are real `celery` processes. Nothing of ours is mocked.
"""

from __future__ import annotations

import datetime as dt
import random
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
from relay.ledger.models import Event, Outbox
from relay.ledger.record import record_decision
from service import create_app
from service.intake.publisher import Queued
from tests.helpers.support import (
    FAST_DELIVERY,
    Process,
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


@dataclass
class Stack:
    name: str
    config: Path
    workdir: Path
    engage: str
    client: Any
    app: Any

    def send(self, body: bytes, msg_id: str | None = None) -> Any:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        return self.client.post(
            "/webhooks/signup", data=body, headers=signed_headers(body, msg_id=msg_id)
        )

    def outbox_statuses(self, email: str) -> list[str]:
        runtime = self.app.extensions["consent_relay"]
        with runtime.sessions() as session:
            rows = session.execute(
                select(Outbox.status)
                .join(Event, Event.id == Outbox.event_id)
                .where(Event.email == email)
                .order_by(Event.id)
            )
            return [row[0] for row in rows]


def _urls(request: pytest.FixtureRequest, name: str) -> tuple[str | None, str | None]:
    if name == "embedded":
        return None, None
    db = request.getfixturevalue("postgres_url")
    broker = request.getfixturevalue("redis_url" if name == "postgres-redis" else "rabbit_url")
    return db, broker


@pytest.fixture(scope="module", params=["embedded", "postgres-redis", "postgres-rabbitmq"])
def stack(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database_url, broker_url = _urls(request, request.param)
    workdir = tmp_path_factory.mktemp(request.param)
    config = write_config(
        workdir / "consent-relay.toml",
        data_dir=workdir / "var",
        engage_url=engage,
        database_url=database_url,
        broker_url=broker_url,
        queue=f"cr-test-{uuid.uuid4().hex[:8]}",
        delivery=FAST_DELIVERY,
    )
    settings = load_settings(config, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    worker = celery_worker(config, workdir)
    try:
        yield Stack(request.param, config, workdir, engage, app.test_client(), app)
    finally:
        worker.stop()
        _delete_queue(settings.broker_url, settings.queue)


def _delete_queue(broker_url: str, queue: str) -> None:
    if broker_url.startswith("amqp"):
        from kombu import Connection

        with Connection(broker_url) as conn:
            conn.default_channel.queue_delete(queue)


def _email() -> str:
    return f"Person.{uuid.uuid4().hex[:8]}+Tag@Example.com"


def _record_unpublished(stack: Stack, email: str, state: str) -> int:
    """A decision written to the ledger (for Engage) with no message published; its contact id."""
    runtime = stack.app.extensions["consent_relay"]
    with runtime.sessions() as session:
        recorded = record_decision(
            session,
            source_name="signup",
            delivery_id=f"unpublished-{uuid.uuid4().hex}",
            webhook_timestamp=0,
            body_sha256="0" * 64,
            decision=Decision(email, state, "registration_form", None, T0),
            destinations=["engage"],
        )
    return recorded.contact_id


def _consent(stack: Stack, email: str) -> Any:
    contact = emulator_contact(stack.engage, email)
    return contact and contact["attributes"].get("tracking_consent")


def test_new_contact_is_created_with_the_decision(stack: Stack) -> None:
    email = _email()
    response = stack.send(decision(email, "granted", source_id="form-7"))
    assert response.status_code == 202, response.json
    wait_for(lambda: _consent(stack, email) == "granted", what="delivery")
    contact = emulator_contact(stack.engage, email)
    assert contact["emailAddress"] == email  # as sent, not lower-cased
    assert contact["attributes"] == {
        "tracking_consent": "granted",
        "tracking_consent_source": "registration_form",
        "tracking_consent_source_id": "form-7",
    }
    wait_for(lambda: stack.outbox_statuses(email) == ["delivered"], what="outbox settled")


def test_duplicate_delivery_is_written_once(stack: Stack) -> None:
    email, msg_id = _email(), f"msg_{uuid.uuid4().hex}"
    body = decision(email, "denied", occurred_at=T0)
    first, second = stack.send(body, msg_id), stack.send(body, msg_id)
    assert (first.status_code, second.status_code) == (202, 200)
    assert (second.json["event_id"], second.json["duplicate"]) == (first.json["event_id"], True)
    wait_for(lambda: _consent(stack, email) == "denied", what="delivery")
    wait_for(lambda: stack.outbox_statuses(email) == ["delivered"], what="outbox settled")
    assert len(emulator_contact(stack.engage, email)["history"]) == 1


def test_older_decision_arriving_later_never_wins(stack: Stack) -> None:
    email = _email()
    assert stack.send(decision(email, "withdrawn", occurred_at=T0)).status_code == 202
    wait_for(lambda: _consent(stack, email) == "withdrawn", what="newer decision delivered")
    stale = stack.send(decision(email, "granted", occurred_at=T0 - dt.timedelta(hours=1)))
    assert stale.status_code == 202
    wait_for(
        lambda: stack.outbox_statuses(email) == ["delivered", "superseded"],
        what="stale decision superseded",
    )
    history = emulator_contact(stack.engage, email)["history"]
    assert [h["attributes"]["tracking_consent"] for h in history] == ["withdrawn"]


def test_burst_for_one_contact_ends_at_the_latest_decision(stack: Stack) -> None:
    email = _email()
    states = ["granted", "denied", "withdrawn", "unknown"]
    events = [(T0 + dt.timedelta(minutes=i), states[i % 4]) for i in range(16)]
    latest = max(events)[1]
    random.Random(7).shuffle(events)
    for occurred, state in events:
        assert stack.send(decision(email, state, occurred_at=occurred)).status_code == 202
    wait_for(lambda: stack.outbox_statuses(email).count("pending") == 0, what="all settled")
    assert _consent(stack, email) == latest
    statuses = stack.outbox_statuses(email)
    assert statuses.count("delivered") >= 1 and len(statuses) == 16
    assert len(emulator_contact(stack.engage, email)["history"]) <= 16


def test_sweeper_delivers_an_event_whose_message_was_lost(stack: Stack) -> None:
    """Recorded in the ledger but never published: beat's sweeper must deliver it."""
    email = _email()
    _record_unpublished(stack, email, "denied")
    beat = celery_beat(stack.config, stack.workdir)
    try:
        wait_for(lambda: _consent(stack, email) == "denied", what="sweeper delivery")
    finally:
        beat.stop()
    assert stack.outbox_statuses(email) == ["delivered"]


def test_broker_down_at_intake_still_accepts_and_delivers(stack: Stack, tmp_path: Path) -> None:
    """The broker is unreachable from the web process: 202 anyway, the sweeper delivers."""
    if stack.name == "embedded":
        pytest.skip("the embedded broker has no server to lose")
    dead = write_config(
        tmp_path / "dead.toml",
        data_dir=tmp_path / "var",
        engage_url=stack.engage,
        database_url=load_settings(stack.config, environ={}).database_url,
        broker_url="redis://127.0.0.1:1/0",
        delivery=FAST_DELIVERY,
    )
    web = create_app({"SETTINGS": load_settings(dead, environ={}), "TESTING": True})
    email = _email()
    body = decision(email, "granted", occurred_at=T0)
    response = web.test_client().post(
        "/webhooks/signup", data=body, headers=signed_headers(body, msg_id=uuid.uuid4().hex)
    )
    assert response.status_code == 202
    assert web.extensions["background_publisher"].flush(timeout=60)  # its publish failed
    beat: Process = celery_beat(stack.config, stack.workdir)
    try:
        wait_for(lambda: _consent(stack, email) == "granted", what="delivery after broker loss")
    finally:
        beat.stop()


def test_a_dispatch_message_is_fanned_out_by_a_worker(stack: Stack) -> None:
    """Under load the web publishes one dispatch message for many contacts: the real worker
    turns it into their deliveries (no beat runs here, so nothing else could deliver them)."""
    emails = [_email() for _ in range(6)]
    contact_ids = [_record_unpublished(stack, email, "withdrawn") for email in emails]
    queued = [Queued("engage", contact_id, "req-batch") for contact_id in contact_ids]
    assert stack.app.extensions["publisher"].publish_queued(queued) == 1  # one message
    for email in emails:
        # The ledger settles the outbox row just after Engage answered: wait for both.
        wait_for(lambda email=email: _consent(stack, email) == "withdrawn", what=email)
        wait_for(lambda email=email: stack.outbox_statuses(email) == ["delivered"], what=email)
