"""relay.ledger.erasure on a migrated SQLite ledger: what goes, what stays, what is refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.ledger import chain_store, erasure
from relay.ledger.models import Contact, DeadLetter, DeliveryAttempt, DeliveryState, Event, Outbox
from tests.helpers import ledger_rows
from tests.helpers.ledger_rows import T0

ADDRESS = "Jane.Doe+x@Example.com"
KEY = "k" * 40


@pytest.fixture
def session(ledger: Any) -> Iterator[Session]:
    with ledger.sessions() as session:
        yield session


def _erase(session: Session, contact_id: int, **kwargs: Any) -> erasure.ErasureResult | None:
    request = erasure.ErasureRequest(contact_id, "ticket 1", "Art. 17")
    options: dict[str, Any] = {"pseudonym_key": KEY, "lease_seconds": 30, **kwargs}
    return erasure.erase_contact(session, request, **options)


def test_the_redactor_replaces_every_letter_case_and_url_encoding() -> None:
    scrub = erasure.redactor([ADDRESS])
    text = f"to {ADDRESS.upper()} / ?email=Jane.Doe%2Bx%40example.com / {ADDRESS}"
    assert scrub(text) == "to [erased] / ?email=[erased] / [erased]"
    assert scrub(None) is None
    assert erasure.redactor([])("unchanged") == "unchanged"


def test_erasure_removes_the_address_and_keeps_a_verifiable_chain(session: Session) -> None:
    contact_id = ledger_rows.record(session, ADDRESS, "granted")
    ledger_rows.record(session, ADDRESS, "withdrawn", occurred_at=T0 + dt.timedelta(hours=1))
    dead = ledger_rows.dead_letter(
        session,
        "engage",
        contact_id,
        T0 + dt.timedelta(hours=2),
        body=f'{{"error": "{ADDRESS.lower()} refused"}}',
        attempt_detail=f"refused {ADDRESS} ({{n}})",
    )
    result = _erase(session, contact_id)
    assert result is not None and result.decisions == 2 and result.pseudonymised
    contact = session.get(Contact, contact_id, populate_existing=True)
    assert contact is not None and contact.erased_at is not None
    assert ADDRESS.lower() not in contact.email_key
    assert erasure.linked_erasures(session, KEY, ADDRESS) == [contact_id]
    events = list(session.scalars(select(Event).where(Event.contact_id == contact_id)))
    assert [(e.email, e.subject_salt) for e in events] == [("", None), ("", None)]
    letter = session.get(DeadLetter, dead, populate_existing=True)
    assert letter is not None and letter.status == "erased"
    assert "[erased]" in (letter.last_body or "") and "jane" not in (letter.last_body or "")
    details = session.scalars(select(DeliveryAttempt.detail))
    assert all("jane" not in (detail or "").lower() for detail in details)
    pending = session.scalars(select(Outbox.status).where(Outbox.contact_id == contact_id))
    assert "pending" not in set(pending)
    assert chain_store.verify(session, contact_id).ok


def test_without_a_key_no_pseudonym_is_kept(session: Session) -> None:
    contact_id = ledger_rows.record(session, ADDRESS, "granted")
    result = _erase(session, contact_id, pseudonym_key=None)
    assert result is not None and not result.pseudonymised
    assert erasure.linked_erasures(session, KEY, ADDRESS) == []


def test_a_second_erasure_and_an_unknown_contact_are_refused(session: Session) -> None:
    contact_id = ledger_rows.record(session, ADDRESS, "granted")
    assert _erase(session, contact_id) is not None
    with pytest.raises(erasure.AlreadyErasedError):
        _erase(session, contact_id)
    assert _erase(session, 999_999) is None


def test_a_write_in_flight_makes_the_erasure_wait_then_refuse(session: Session) -> None:
    contact_id = ledger_rows.record(session, ADDRESS, "granted")
    session.merge(
        DeliveryState(
            destination="engage",
            contact_id=contact_id,
            lease_owner="worker-1",
            lease_expires_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
        )
    )
    session.commit()
    waits: list[float] = []
    with pytest.raises(erasure.ErasureBusyError) as refused:
        _erase(session, contact_id, sleep=waits.append)
    assert refused.value.headers["Retry-After"] == "5"
    assert len(waits) == erasure.LEASE_TRIES - 1
    contact = session.get(Contact, contact_id, populate_existing=True)
    assert contact is not None and contact.erased_at is None
    assert session.scalars(select(Event.email).where(Event.contact_id == contact_id)).all() == [
        ADDRESS
    ]
    state = session.get(DeliveryState, ("engage", contact_id), populate_existing=True)
    assert state is not None and state.lease_owner == "worker-1"  # its lease untouched
