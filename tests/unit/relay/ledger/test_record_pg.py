"""The intake's one-statement path on PostgreSQL (relay/ledger/record_pg.py) against a real server:
what it writes equals what the general path writes, every case it cannot settle falls back
to the general path, and the web retries once on a connection the server closed."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from relay.config.loader import load_settings, normalise_database_url
from relay.domain import Decision
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import Contact, Event, Outbox
from relay.ledger.record import Incoming, record_events
from service import create_app
from tests.helpers.support import decision as decision_body
from tests.helpers.support import signed_headers, write_config

DESTINATIONS = ("engage", "acoustic")
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pg(postgres_url: str) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = make_engine(normalise_database_url(postgres_url))
    upgrade(engine)
    yield engine, make_session_factory(engine)
    engine.dispose()


def _email() -> str:
    return f"Ledger.{uuid.uuid4().hex[:8]}@Example.com"


def _record(pg: Any, *incoming: Incoming, source: str = "crm") -> list[tuple[str, str]]:
    with pg[1]() as session:
        outcomes = record_events(
            session,
            source_name=source,
            webhook_timestamp=1_700_000_000,
            body_sha256="0" * 64,
            incoming=list(incoming),
            destinations=DESTINATIONS,
        )
    return [(outcome.delivery_id, outcome.status) for outcome in outcomes]


def _events(pg: Any, email: str) -> list[Event]:
    with pg[1]() as session:
        return list(session.scalars(select(Event).where(Event.email == email).order_by(Event.id)))


def _outbox(pg: Any, event_id: int) -> list[tuple[str, str, int]]:
    with pg[1]() as session:
        rows = session.execute(
            select(Outbox.destination, Outbox.status, Outbox.contact_id)
            .where(Outbox.event_id == event_id)
            .order_by(Outbox.destination)
        )
        return [(row[0], row[1], row[2]) for row in rows]


def test_a_new_decision_is_recorded_with_its_contact_and_outbox_rows(pg: Any) -> None:
    email = _email()
    given = Decision(email, "withdrawn", "form", "f-1", T0)
    before = dt.datetime.now(dt.UTC)
    assert _record(pg, Incoming("d-1", "t", decision=given)) == [("d-1", "accepted")]
    [event] = _events(pg, email)
    assert (event.decision, event.consent_source, event.consent_source_id) == (
        "withdrawn",
        "form",
        "f-1",
    )
    assert (event.occurred_at, event.occurred_at_given) == (T0, True)
    assert event.received_at >= before - dt.timedelta(seconds=1)
    assert (event.source_name, event.delivery_id, event.webhook_timestamp) == (
        "crm",
        "d-1",
        1_700_000_000,
    )
    assert _outbox(pg, event.id) == [
        ("acoustic", "pending", event.contact_id),
        ("engage", "pending", event.contact_id),
    ]
    with pg[1]() as session:
        contact = session.get(Contact, event.contact_id)
        assert contact is not None and contact.email_key == email.lower()
        created = session.scalar(select(Outbox.created_at).where(Outbox.event_id == event.id))
    assert created == event.received_at


def test_without_a_decision_time_the_receipt_time_stands_in(pg: Any) -> None:
    email = _email()
    _record(pg, Incoming("d-2", "t", decision=Decision(email, "granted", "form", None, None)))
    [event] = _events(pg, email)
    assert event.occurred_at == event.received_at and event.occurred_at_given is False


def test_an_existing_contact_is_reused_whatever_the_case(pg: Any) -> None:
    email = _email()
    _record(pg, Incoming(f"a-{email}", "t", decision=Decision(email, "granted", "f", None, T0)))
    _record(
        pg, Incoming(f"b-{email}", "t", decision=Decision(email.upper(), "denied", "f", None, T0))
    )
    first, second = _events(pg, email)[0], _events(pg, email.upper())[0]
    assert first.contact_id == second.contact_id


def test_a_duplicate_goes_the_general_way_and_writes_nothing(pg: Any) -> None:
    email = _email()
    item = Incoming(f"dup-{email}", "t", decision=Decision(email, "granted", "f", None, T0))
    assert _record(pg, item) == [(item.delivery_id, "accepted")]
    assert _record(pg, item) == [(item.delivery_id, "duplicate")]
    [event] = _events(pg, email)
    assert len(_outbox(pg, event.id)) == len(DESTINATIONS)
    assert _chain(pg, event.contact_id)[0] == 1  # the statement did not move the chain


def _chain(pg: Any, contact_id: int) -> tuple[int, str]:
    with pg[1]() as session:
        contact = session.get(Contact, contact_id)
        assert contact is not None
        return contact.chain_seq, contact.chain_head


def test_a_duplicate_recorded_meanwhile_aborts_the_statement_whole(pg: Any) -> None:
    """A sender retries while its first attempt is still in flight: the first transaction holds
    the contact's row and the event; ours waits on the row, moves the chain, finds the event
    there and must abort everything (consent_relay_conflict), not leave a chain link without
    its event. The general path then answers `duplicate`."""
    engine, _sessions = pg
    email = _email()
    first = Incoming(f"one-{email}", "t", decision=Decision(email, "granted", "f", None, T0))
    _record(pg, first)
    [event] = _events(pg, email)
    retried = Incoming(f"two-{email}", "t", decision=Decision(email, "denied", "f", None, T0))
    other = engine.connect()
    other.execute(
        text("UPDATE contacts SET chain_seq = chain_seq + 1 WHERE id = :id"),
        {"id": event.contact_id},
    )  # the first attempt's transaction: holds the contact's row ...
    other.execute(
        text(
            "INSERT INTO events (public_id, source_name, delivery_id, body_sha256, contact_id,"
            " email, decision, consent_source, occurred_at, occurred_at_given,"
            " webhook_timestamp, received_at, chain_seq, chain_hash)"
            " SELECT :p, 'crm', :d, :b, id, :e, 'denied', 'f', now(), true, 1, now(),"
            " chain_seq, chain_head FROM contacts WHERE id = :id"
        ),
        {
            "p": str(uuid.uuid4()),
            "d": retried.delivery_id,
            "b": "0" * 64,
            "e": email,
            "id": event.contact_id,
        },
    )  # ... and the event, committed while ours waits
    timer = threading.Timer(0.5, other.commit)
    timer.start()
    try:
        assert _record(pg, retried) == [(retried.delivery_id, "duplicate")]
    finally:
        timer.join()
        other.close()
    assert _chain(pg, event.contact_id)[0] == 2  # the other's link only, not ours too
    assert len(_events(pg, email)) == 2


def test_a_redelivery_mixing_new_and_known_ids_is_recorded_whole(pg: Any) -> None:
    """One known id in the delivery: the one-statement path writes nothing of it, and the
    general path records the new one and recognises the known one."""
    known, new = _email(), _email()
    _record(pg, Incoming(f"k-{known}", "t", decision=Decision(known, "granted", "f", None, T0)))
    outcomes = _record(
        pg,
        Incoming(f"n-{new}", "t", decision=Decision(new, "denied", "f", None, T0)),
        Incoming(f"k-{known}", "t", decision=Decision(known, "granted", "f", None, T0)),
    )
    assert outcomes == [(f"n-{new}", "accepted"), (f"k-{known}", "duplicate")]
    assert len(_events(pg, new)) == 1 and len(_events(pg, known)) == 1


def test_ignored_events_in_a_delivery_take_the_general_way(pg: Any) -> None:
    email = _email()
    outcomes = _record(
        pg,
        Incoming(f"i-{email}", "t", decision=Decision(email, "granted", "f", None, T0)),
        Incoming(f"x-{email}", "contact.creation", ignored="Not a consent change."),
    )
    assert outcomes == [(f"i-{email}", "accepted"), (f"x-{email}", "ignored")]


def test_a_contact_created_meanwhile_by_another_transaction(pg: Any) -> None:
    """Another transaction inserts the same contact and commits while ours runs: our
    statement's snapshot cannot see it, so the general path records the event on it."""
    engine, _sessions = pg
    email = _email()
    other = engine.connect()
    other.execute(
        text("INSERT INTO contacts (email_key, created_at) VALUES (:k, now())"),
        {"k": email.lower()},
    )  # not committed yet: our insert of the same key waits for it
    timer = threading.Timer(0.5, other.commit)
    timer.start()
    try:
        item = Incoming(f"race-{email}", "t", decision=Decision(email, "granted", "f", None, T0))
        assert _record(pg, item) == [(item.delivery_id, "accepted")]
    finally:
        timer.join()
        other.close()
    [event] = _events(pg, email)
    with pg[1]() as session:
        contacts = session.scalars(select(Contact.id).where(Contact.email_key == email.lower()))
        assert list(contacts) == [event.contact_id]


def test_the_web_retries_once_on_a_connection_the_server_closed(
    postgres_url: str, tmp_path: Path
) -> None:
    """The web's pool does not ping before each use: a restart of PostgreSQL (here: its
    backends terminated) must not turn the next webhook into a 503."""
    config = write_config(
        tmp_path / "c.toml",
        data_dir=tmp_path / "var",
        engage_url="http://127.0.0.1:9",
        database_url=postgres_url,
    )
    app = create_app({"SETTINGS": load_settings(config, environ={}), "TESTING": True})
    client = app.test_client()
    database = postgres_url.rsplit("/", 1)[1]

    def send(email: str) -> int:
        body = decision_body(email, "granted", occurred_at=T0)
        return client.post(
            "/webhooks/signup",
            data=body,
            headers=signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}"),
        ).status_code

    assert send(_email()) == 202
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        ).scalar_one()
    admin.dispose()
    assert ended >= 1
    time.sleep(0.2)
    email = _email()
    assert send(email) == 202
    runtime = app.extensions["consent_relay"]
    with runtime.sessions() as session:
        assert session.scalar(select(Event.decision).where(Event.email == email)) == "granted"
    app.extensions["background_publisher"].close(timeout=0)
