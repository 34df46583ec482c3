"""Peer destinations through the real delivery loop (SQLite ledger, emulators over HTTP):
fan-out with a delivery state per destination, lossy channel_consent cases in the ledger,
configuration errors and missing contacts dead-lettered with a clear reason, and batching
that still writes each contact's latest decision."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from emulators import acoustic, dotdigital, moengage
from emulators.server import EmulatorServer
from relay.config.settings import DeliverySettings, DestinationSettings
from relay.domain import Decision
from relay.ledger.models import DeadLetter, DeliveryAttempt, DeliveryState, Outbox, utcnow
from relay.ledger.record import Recorded, record_decision
from tests.helpers.delivery_world import Ledger
from workers.delivery.batch import deliver_batch
from workers.delivery.contact import DeliveryContext, deliver_contact
from workers.delivery.sweeper import sweep
from workers.delivery.writers import build_writer

FIELDS = {
    "consent_field": "tracking_consent",
    "source_field": "tracking_consent_source",
    "source_id_field": "tracking_consent_source_id",
}
DD_FIELDS = {key: value.upper() for key, value in FIELDS.items()}
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def peers() -> Iterator[dict[str, EmulatorServer]]:
    servers = {
        "acoustic": EmulatorServer(acoustic.create_emulator_app(any_contact=True)).start(),
        "dotdigital": EmulatorServer(dotdigital.create_emulator_app(any_contact=True)).start(),
        "moengage": EmulatorServer(moengage.create_emulator_app(any_contact=True)).start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


def settings_for(
    peers: dict[str, EmulatorServer], **modes: dict[str, Any]
) -> dict[str, DestinationSettings]:
    base = {
        "acoustic": ("acoustic-connect", {**FIELDS, "api_key": acoustic.API_KEY, "batch_size": 50}),
        "dotdigital": ("dotdigital", DD_FIELDS),
        "moengage": (
            "moengage",
            {**FIELDS, "app_id": moengage.APP_ID, "api_key": moengage.API_KEY},
        ),
    }
    return {
        name: DestinationSettings(
            name,
            kind,
            peers[name].url,
            dotdigital.USERNAME,
            dotdigital.PASSWORD,
            read_timeout_seconds=5,
            options={**options, **modes.get(name, {})},
        )
        for name, (kind, options) in base.items()
    }


def context(
    ledger: Ledger, settings: dict[str, DestinationSettings], **delivery: Any
) -> DeliveryContext:
    writers = {name: build_writer(dest) for name, dest in settings.items()}
    return DeliveryContext(ledger.sessions, writers, DeliverySettings(**delivery))


def record(
    ledger: Ledger, email: str, consent: str, names: Any, occurred: dt.datetime = T0
) -> Recorded:
    with ledger.sessions() as session:
        return record_decision(
            session,
            source_name="signup",
            delivery_id=f"msg_{uuid.uuid4().hex}",
            webhook_timestamp=int(utcnow().timestamp()),
            body_sha256=hashlib.sha256(consent.encode()).hexdigest(),
            decision=Decision(email, consent, "registration_form", None, occurred),
            destinations=list(names),
        )


def rows(ledger: Ledger, model: Any) -> list[Any]:
    with ledger.sessions() as session:
        return list(session.scalars(select(model)))


def peer_contact(server: EmulatorServer, email: str) -> dict[str, Any]:
    return requests.get(f"{server.url}/_emulator/state", timeout=5).json()["contacts"][
        email.lower()
    ]


def test_one_decision_fans_out_with_a_state_per_destination(ledger: Ledger, peers: dict) -> None:
    settings = settings_for(peers)
    ctx = context(ledger, settings)
    recorded = record(ledger, "Jane@Example.com", "withdrawn", settings)
    for name in settings:
        assert deliver_contact(ctx, name, recorded.contact_id, f"owner-{name}") == "delivered"
    states = {s.destination: s for s in rows(ledger, DeliveryState)}
    assert set(states) == set(settings) and all(s.delivered_event_id for s in states.values())
    # MoEngage attribute mode (Track User) cannot show that it applied the write.
    statuses = {o.destination: o.status for o in rows(ledger, Outbox)}
    assert statuses == {**dict.fromkeys(settings, "delivered"), "moengage": "unverified"}
    assert (
        peer_contact(peers["acoustic"], "jane@example.com")["fields"]["tracking_consent"]
        == "withdrawn"
    )
    assert (
        peer_contact(peers["dotdigital"], "jane@example.com")["fields"]["TRACKING_CONSENT"]
        == "withdrawn"
    )
    assert (
        peer_contact(peers["moengage"], "jane@example.com")["fields"]["tracking_consent"]
        == "withdrawn"
    )


def test_lossy_channel_consent_cases_are_visible_in_the_ledger(ledger: Ledger, peers: dict) -> None:
    settings = settings_for(peers, moengage={"mode": "channel_consent"})
    ctx = context(ledger, {"moengage": settings["moengage"]})
    first = record(ledger, "jane@example.com", "withdrawn", ["moengage"])
    assert deliver_contact(ctx, "moengage", first.contact_id, "w1") == "delivered"
    record(ledger, "jane@example.com", "unknown", ["moengage"], T0 + dt.timedelta(minutes=1))
    assert deliver_contact(ctx, "moengage", first.contact_id, "w2") == "delivered"
    attempts = [(a.outcome, a.http_status, a.detail) for a in rows(ledger, DeliveryAttempt)]
    assert attempts == [
        (
            "delivered",
            200,
            "channel_consent: withdrawn written as OPTED_OUT "
            "(lossy: denied and withdrawn look the same there)",
        ),
        ("not_written", None, "not written: unknown has no MoEngage value"),
    ]
    assert {o.status for o in rows(ledger, Outbox)} == {"delivered"}
    assert peer_contact(peers["moengage"], "jane@example.com")["channel"] == "OPTED_OUT"


def test_missing_field_is_dead_lettered_at_once(ledger: Ledger, peers: dict) -> None:
    settings = settings_for(peers, dotdigital={"consent_field": "NOT_DEFINED"})
    ctx = context(ledger, {"dotdigital": settings["dotdigital"]})
    recorded = record(ledger, "jane@example.com", "denied", ["dotdigital"])
    assert deliver_contact(ctx, "dotdigital", recorded.contact_id, "w") == "dead_lettered"
    [dead] = rows(ledger, DeadLetter)
    assert (dead.reason, dead.attempts, dead.last_status) == ("misconfigured", 1, 400)
    assert "NOT_DEFINED" in (dead.last_body or "")


def test_missing_contact_is_retried_then_dead_lettered_as_not_found(ledger: Ledger) -> None:
    with EmulatorServer(moengage.create_emulator_app()) as server:  # users must exist
        dest = DestinationSettings(
            "moengage",
            "moengage",
            server.url,
            options={
                **FIELDS,
                "mode": "channel_consent",
                "app_id": moengage.APP_ID,
                "api_key": moengage.API_KEY,
            },
        )
        ctx = context(
            ledger, {"moengage": dest}, max_rejected_attempts=2, rejected_retry_seconds=0.1
        )
        recorded = record(ledger, "nobody@example.com", "denied", ["moengage"])
        assert deliver_contact(ctx, "moengage", recorded.contact_id, "w1") == "failed"
        with ledger.sessions() as session:  # the retry is due
            state = session.get(DeliveryState, ("moengage", recorded.contact_id))
            state.next_attempt_at = None
            session.commit()
        assert deliver_contact(ctx, "moengage", recorded.contact_id, "w2") == "dead_lettered"
    [dead] = rows(ledger, DeadLetter)
    assert (dead.reason, dead.attempts, dead.last_status) == ("not_found", 2, 400)


def test_a_backlog_is_written_in_one_batch_with_each_latest_decision(
    ledger: Ledger, peers: dict
) -> None:
    settings = settings_for(peers)
    ctx = context(ledger, {"acoustic": settings["acoustic"]})
    emails = [f"person{i}@example.com" for i in range(6)]
    latest = {}
    for i, email in enumerate(emails):
        for minute, consent in enumerate(("granted", "denied", "withdrawn")[: 1 + i % 3]):
            record(ledger, email, consent, ["acoustic"], T0 + dt.timedelta(minutes=minute))
            latest[email] = consent
    singles: list[Any] = []
    batches: list[tuple[str, list[int]]] = []
    later = DeliveryContext(
        ctx.sessions, ctx.writers, ctx.settings, lambda: utcnow() + dt.timedelta(seconds=5)
    )
    assert (
        sweep(
            later,
            lambda d, c, _u: singles.append((d, c)),
            lambda d, ids, _u: batches.append((d, ids)),
        )
        == 6
    )
    assert singles == [] and len(batches) == 1 and len(batches[0][1]) == 6
    outcomes = deliver_batch(ctx, "acoustic", batches[0][1], "batch-owner")
    assert outcomes == {"delivered": 6, "busy": 0}
    snapshot = requests.get(f"{peers['acoustic'].url}/_emulator/state", timeout=5).json()
    assert snapshot["requests_total"] == 1
    for email in emails:
        assert snapshot["contacts"][email]["fields"]["tracking_consent"] == latest[email]
    assert {o.status for o in rows(ledger, Outbox)} == {"delivered", "superseded"}
    assert deliver_batch(ctx, "acoustic", batches[0][1], "again") == {"up_to_date": 6, "busy": 0}
