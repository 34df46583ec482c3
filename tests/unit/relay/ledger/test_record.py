"""`record_events`: one delivery carrying several events (HubSpot, Salesforce), each recorded,
recognised as a duplicate by its own id, or ignored with its reason, in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from relay.domain import Decision
from relay.ledger.models import Event, IgnoredEvent, Outbox
from relay.ledger.record import Incoming, record_events

DESTINATIONS = ("engage", "acoustic")


def decision(email: str, consent: str = "granted") -> Decision:
    return Decision(email, consent, "crm", None, None)


def record(ledger: Any, *incoming: Incoming) -> list[tuple[str, str]]:
    with ledger.sessions() as session:
        outcomes = record_events(
            session,
            source_name="crm",
            webhook_timestamp=1_700_000_000,
            body_sha256="0" * 64,
            incoming=list(incoming),
            destinations=DESTINATIONS,
        )
    return [(outcome.delivery_id, outcome.status) for outcome in outcomes]


def count(ledger: Any, model: Any) -> int:
    with ledger.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_each_event_of_a_delivery_is_recorded_with_its_outbox_rows(ledger: Any) -> None:
    outcomes = record(
        ledger,
        Incoming("1", "contact.propertyChange", decision=decision("a@example.com")),
        Incoming("2", "contact.propertyChange", decision=decision("b@example.com", "denied")),
        Incoming("3", "contact.creation", ignored="Not a consent change."),
    )
    assert outcomes == [("1", "accepted"), ("2", "accepted"), ("3", "ignored")]
    assert count(ledger, Event) == 2
    assert count(ledger, Outbox) == 4
    with ledger.sessions() as session:
        ignored = session.scalars(select(IgnoredEvent)).one()
    assert (ignored.delivery_id, ignored.event_type) == ("3", "contact.creation")
    assert ignored.reason == "Not a consent change."


def test_a_redelivery_mixes_duplicates_and_new_events(ledger: Any) -> None:
    record(ledger, Incoming("1", "t", decision=decision("a@example.com")))
    outcomes = record(
        ledger,
        Incoming("1", "t", decision=decision("a@example.com")),
        Incoming("4", "t", decision=decision("c@example.com")),
    )
    assert outcomes == [("1", "duplicate"), ("4", "accepted")]
    assert count(ledger, Event) == 2


def test_the_same_id_twice_in_one_delivery_is_recorded_once(ledger: Any) -> None:
    outcomes = record(
        ledger,
        Incoming("7", "t", decision=decision("a@example.com")),
        Incoming("7", "t", decision=decision("a@example.com")),
    )
    assert outcomes == [("7", "accepted"), ("7", "duplicate")]
    assert count(ledger, Event) == 1


def test_an_ignored_event_redelivered_is_kept_once(ledger: Any) -> None:
    record(ledger, Incoming("9", "deal.change", ignored="Not a person."))
    assert record(ledger, Incoming("9", "deal.change", ignored="Not a person.")) == [
        ("9", "ignored")
    ]
    assert count(ledger, IgnoredEvent) == 1


def test_one_failing_event_rolls_the_whole_delivery_back(ledger: Any) -> None:
    too_long = "x" * 300  # over the 255-character delivery id column on PostgreSQL
    with ledger.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_long BEFORE INSERT ON events WHEN length(NEW.delivery_id) > 255 "
            "BEGIN SELECT RAISE(ABORT, 'too long'); END"
        )
    try:
        record(
            ledger,
            Incoming("ok", "t", decision=decision("a@example.com")),
            Incoming(too_long, "t", decision=decision("b@example.com")),
        )
    except Exception as exc:  # noqa: BLE001 - the database's refusal, whatever its class
        assert "too long" in str(exc)
    else:
        raise AssertionError("the refused insert should have failed the delivery")
    assert count(ledger, Event) == 0
    assert count(ledger, Outbox) == 0
