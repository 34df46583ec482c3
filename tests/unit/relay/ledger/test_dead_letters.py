"""relay.ledger.dead_letters on a migrated SQLite ledger: listing, filters, detail and replay.

Dead letters are written by the delivery worker's own code (ledger_rows.dead_letter): the
contact's latest decision, the pair's pending outbox rows turned `dead_lettered`, the retry state
cleared, and older open dead letters of the pair superseded.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select, update
from sqlalchemy.orm import Session

from relay.ledger import dead_letters
from relay.ledger.dead_letters import DeadLetterFilters, ReplayRefused
from relay.ledger.models import Contact, DeadLetter, DeliveryAttempt, DeliveryState, Event, Outbox
from tests.helpers import ledger_rows
from tests.helpers.ledger_rows import T0

NOW = dt.datetime(2026, 7, 5, 12, 0, tzinfo=dt.UTC)
ALL = DeadLetterFilters(status="all", limit=None)


# Decisions from form-7; Engage refuses every attempt with INVALID_PARAMETER.
record = partial(ledger_rows.record, consent_source_id="form-7")
dead_letter = partial(
    ledger_rows.dead_letter,
    message="Engage refused the write 3 times",
    body='{"errorCode": "INVALID_PARAMETER"}',
)


@pytest.fixture
def session(ledger: Any) -> Iterator[Session]:
    with ledger.sessions() as session:
        yield session


@pytest.fixture
def seeded(session: Session) -> dict[str, int]:
    """Three contacts, four dead letters (one superseded), two sources, two destinations."""
    jane = record(session, "Jane.Doe@Example.com", "granted")
    john = record(session, "john@example.com", "denied", "crm")
    ann = record(session, "ann@example.com", "withdrawn")
    jane_old = dead_letter(session, "engage", jane, T0 + dt.timedelta(hours=1))
    # A newer decision, refused too: its dead letter supersedes the first one.
    record(session, "Jane.Doe@Example.com", "denied", occurred_at=T0 + dt.timedelta(minutes=90))
    ids = {
        "jane_old": jane_old,
        "jane": dead_letter(session, "engage", jane, T0 + dt.timedelta(hours=2)),
        "john": dead_letter(session, "engage", john, T0 + dt.timedelta(hours=3), reason="max_age"),
        "ann_eu": dead_letter(session, "engage_eu", ann, T0 + dt.timedelta(hours=4)),
    }
    return ids | {"jane_contact": jane, "john_contact": john, "ann_contact": ann}


def outbox(session: Session, contact_id: int, destination: str) -> list[Outbox]:
    session.expire_all()
    return list(
        session.scalars(
            select(Outbox).where(Outbox.contact_id == contact_id, Outbox.destination == destination)
        )
    )


def state(session: Session, contact_id: int, destination: str) -> DeliveryState:
    session.expire_all()
    row = session.get(DeliveryState, (destination, contact_id))
    assert row is not None
    return row


def ids_of(views: list[dead_letters.DeadLetterView]) -> list[int]:
    return [view.id for view in views]


class StatementCounter:
    def __init__(self, engine: Engine):
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.split(None, 1)[0].upper() in ("SELECT", "UPDATE", "INSERT", "DELETE"):
            self.statements.append(statement)


# --- listing ------------------------------------------------------------------------------------


def test_list_defaults_to_open_newest_first_with_the_decision(
    session: Session, seeded: dict[str, int]
) -> None:
    views = dead_letters.list_dead_letters(session, DeadLetterFilters())

    assert ids_of(views) == [seeded["ann_eu"], seeded["john"], seeded["jane"]]
    jane = views[2]
    public_id = session.scalar(
        select(Event.public_id)
        .where(Event.contact_id == seeded["jane_contact"])
        .order_by(Event.occurred_at.desc())
    )
    assert jane.as_json() == {
        "id": seeded["jane"],
        "destination": "engage",
        "source": "signup",
        "email": "Jane.Doe@Example.com",  # as sent
        "decision": "denied",  # the latest decision, the one dead-lettered
        "consent_source": "registration_form",
        "consent_source_id": "form-7",
        "occurred_at": (T0 + dt.timedelta(minutes=90)).isoformat(),
        "received_at": jane.received_at.isoformat(),
        "event_id": public_id,
        "reason": "rejected",
        "detail": "Engage refused the write 3 times",
        "last_status": 400,
        "last_body": '{"errorCode": "INVALID_PARAMETER"}',
        "attempts": 3,
        "first_failed_at": (T0 + dt.timedelta(hours=2, minutes=-3)).isoformat(),
        "created_at": (T0 + dt.timedelta(hours=2)).isoformat(),
        "status": "open",
        "resolved_at": None,
        "replay_count": 0,
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (DeadLetterFilters(status="superseded"), ["jane_old"]),
        (DeadLetterFilters(status="replayed"), []),
        (ALL, ["ann_eu", "john", "jane", "jane_old"]),
        (DeadLetterFilters(destination="engage_eu"), ["ann_eu"]),
        (DeadLetterFilters(source="crm"), ["john"]),
        (DeadLetterFilters(source="signup"), ["ann_eu", "jane"]),
        (DeadLetterFilters(email="  JANE.doe@example.COM "), ["jane"]),
        (DeadLetterFilters(email="nobody@example.com"), []),
        (
            DeadLetterFilters(status="all", since=T0 + dt.timedelta(hours=2)),
            ["ann_eu", "john", "jane"],
        ),
        (DeadLetterFilters(status="all", until=T0 + dt.timedelta(hours=2)), ["jane_old"]),
        (
            DeadLetterFilters(since=T0 + dt.timedelta(hours=3), until=T0 + dt.timedelta(hours=4)),
            ["john"],
        ),
        (DeadLetterFilters(status="all", limit=2), ["ann_eu", "john"]),
        (DeadLetterFilters(status="all", limit=2, offset=2), ["jane", "jane_old"]),
    ],
)
def test_list_filters(
    session: Session,
    seeded: dict[str, int],
    filters: DeadLetterFilters,
    expected: list[str],
) -> None:
    views = dead_letters.list_dead_letters(session, filters)
    assert ids_of(views) == [seeded[name] for name in expected]


def test_list_is_one_query_whatever_the_page_size(ledger: Any, session: Session) -> None:
    for n in range(20):
        contact = record(session, f"person{n}@example.com", "granted")
        dead_letter(session, "engage", contact, T0 + dt.timedelta(minutes=n), attempts=1)
    counter = StatementCounter(ledger.engine)

    views = dead_letters.list_dead_letters(session, DeadLetterFilters(limit=None))

    assert len(views) == 20
    assert {view.email for view in views} == {f"person{n}@example.com" for n in range(20)}
    assert len(counter.statements) == 1


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        DeadLetterFilters(status="closed")


# --- detail -------------------------------------------------------------------------------------


def test_detail_has_the_attempt_history_up_to_the_dead_letter(
    session: Session, seeded: dict[str, int]
) -> None:
    jane = seeded["jane_contact"]
    # An attempt after the dead letter (a newer decision) and one to another destination.
    later = T0 + dt.timedelta(hours=5)
    latest_event = session.scalar(select(Event.id).where(Event.contact_id == jane))
    assert latest_event is not None
    for destination in ("engage", "engage_eu"):
        session.add(
            DeliveryAttempt(
                destination=destination,
                contact_id=jane,
                event_id=latest_event,
                started_at=later if destination == "engage" else T0,
                finished_at=later,
                outcome="failed",
                http_status=503,
            )
        )
    session.commit()

    detail = dead_letters.get_dead_letter(session, seeded["jane"])

    assert detail is not None
    assert detail.dead_letter.id == seeded["jane"]
    # jane_old's three attempts and jane's three, oldest first; not the later or the EU one.
    started = [attempt.started_at for attempt in detail.history]
    assert started == sorted(started)
    assert len(detail.history) == 6
    assert started[-1] == T0 + dt.timedelta(hours=2, minutes=-1)
    assert {a.http_status for a in detail.history} == {400}
    assert detail.history[-1].detail == "attempt 3"
    assert detail.as_json()["history"][0]["started_at"] == started[0].isoformat()


def test_detail_keeps_the_last_50_attempts(session: Session) -> None:
    contact = record(session, "busy@example.com", "granted")
    dead_id = dead_letter(session, "engage", contact, T0 + dt.timedelta(days=1), attempts=55)

    detail = dead_letters.get_dead_letter(session, dead_id)

    assert detail is not None
    assert len(detail.history) == 50
    assert [a.detail for a in detail.history] == [f"attempt {n}" for n in range(6, 56)]


def test_detail_of_an_unknown_id_is_none(session: Session) -> None:
    assert dead_letters.get_dead_letter(session, 999) is None


# --- replay -------------------------------------------------------------------------------------


def test_replay_makes_the_rows_pending_and_resets_the_state(
    session: Session, seeded: dict[str, int]
) -> None:
    jane = seeded["jane_contact"]
    assert {row.status for row in outbox(session, jane, "engage")} == {"dead_lettered"}
    eu_before = [(row.id, row.status) for row in outbox(session, jane, "engage_eu")]
    # A dispatch is still marked on the pair (the sweeper's, since the worker let go).
    session.execute(
        update(DeliveryState)
        .where(DeliveryState.contact_id == jane, DeliveryState.destination == "engage")
        .values(dispatched_at=NOW - dt.timedelta(minutes=1))
    )
    session.commit()
    assert state(session, jane, "engage").dispatched_at is not None

    result = dead_letters.replay(session, ids=[seeded["jane"]], now=NOW)
    session.commit()

    assert result.replayed == [seeded["jane"]]
    assert result.skipped == {} and result.unknown == []
    assert result.pairs == {("engage", jane)}
    rows = outbox(session, jane, "engage")
    assert [(row.status, row.settled_by_event_id, row.settled_at) for row in rows] == [
        ("pending", None, None),
        ("pending", None, None),
    ]
    assert [(row.id, row.status) for row in outbox(session, jane, "engage_eu")] == eu_before
    dead = session.get(DeadLetter, seeded["jane"])
    assert dead is not None
    assert (dead.status, dead.resolved_at, dead.replay_count) == ("replayed", NOW, 1)
    delivery = state(session, jane, "engage")
    assert delivery.dispatched_at is None
    assert (delivery.attempts, delivery.rejections) == (0, 0)


def test_second_replay_is_a_no_op(session: Session, seeded: dict[str, int]) -> None:
    jane = seeded["jane_contact"]
    dead_letters.replay(session, ids=[seeded["jane"]], now=NOW)
    session.commit()
    # The worker delivers the replayed decision.
    session.execute(update(Outbox).where(Outbox.contact_id == jane).values(status="delivered"))
    session.commit()

    again = dead_letters.replay(session, ids=[seeded["jane"]], now=NOW + dt.timedelta(hours=1))
    session.commit()

    assert again.replayed == []
    assert again.skipped == {seeded["jane"]: "already replayed"}
    assert again.pairs == set()
    assert {row.status for row in outbox(session, jane, "engage")} == {"delivered"}
    dead = session.get(DeadLetter, seeded["jane"])
    assert dead is not None
    assert (dead.status, dead.resolved_at, dead.replay_count) == ("replayed", NOW, 1)


def test_replay_skips_superseded_and_reports_unknown_ids(
    session: Session, seeded: dict[str, int]
) -> None:
    result = dead_letters.replay(
        session, ids=[seeded["jane_old"], 999, seeded["john"], seeded["john"]], now=NOW
    )

    assert result.replayed == [seeded["john"]]
    assert result.skipped == {seeded["jane_old"]: "superseded by a newer decision"}
    assert result.unknown == [999]
    assert result.pairs == {("engage", seeded["john_contact"])}


def test_replay_gives_a_newer_failing_decision_a_fresh_start(
    session: Session, seeded: dict[str, int]
) -> None:
    """A newer decision arrived after the dead letter and is backing off: replay resets the
    pair, and the worker then writes that newer decision (state-based delivery)."""
    jane = seeded["jane_contact"]
    record(session, "jane.doe@example.com", "withdrawn", occurred_at=T0 + dt.timedelta(days=1))
    session.execute(
        update(DeliveryState)
        .where(DeliveryState.contact_id == jane, DeliveryState.destination == "engage")
        .values(attempts=2, rejections=1, failing_since=T0, next_attempt_at=NOW)
    )
    session.commit()

    dead_letters.replay(session, ids=[seeded["jane"]], now=NOW)
    session.commit()

    assert [row.status for row in outbox(session, jane, "engage")] == ["pending"] * 3
    delivery = state(session, jane, "engage")
    assert (delivery.attempts, delivery.rejections) == (0, 0)
    assert (delivery.failing_since, delivery.next_attempt_at) == (None, None)


def test_replay_by_filters_touches_only_matching_open_dead_letters(
    session: Session, seeded: dict[str, int]
) -> None:
    result = dead_letters.replay(session, filters=DeadLetterFilters(destination="engage"), now=NOW)
    session.commit()

    assert sorted(result.replayed) == sorted([seeded["jane"], seeded["john"]])
    assert result.skipped == {}  # the superseded one is not selected at all
    views = dead_letters.list_dead_letters(session, ALL)
    statuses = {view.id: view.status for view in views}
    assert statuses[seeded["ann_eu"]] == "open"
    assert statuses[seeded["jane_old"]] == "superseded"
    assert {row.status for row in outbox(session, seeded["ann_contact"], "engage_eu")} == {
        "dead_lettered"
    }


def test_replay_all_replays_every_open_dead_letter(
    session: Session, seeded: dict[str, int]
) -> None:
    result = dead_letters.replay(session, replay_all=True, now=NOW)
    session.commit()

    assert sorted(result.replayed) == sorted([seeded["jane"], seeded["john"], seeded["ann_eu"]])
    assert session.scalar(select(func.count()).where(Outbox.status == "dead_lettered")) == 0
    assert dead_letters.list_dead_letters(session, DeadLetterFilters()) == []


@pytest.mark.parametrize(
    "selection",
    [
        {},
        {"ids": []},
        {"filters": DeadLetterFilters(status="all")},  # no narrowing filter
        {"ids": [1], "replay_all": True},
        {"filters": DeadLetterFilters(destination="engage"), "replay_all": True},
    ],
)
def test_replay_refuses_an_unclear_selection(
    session: Session, seeded: dict[str, int], selection: dict[str, Any]
) -> None:
    with pytest.raises(ReplayRefused):
        dead_letters.replay(session, now=NOW, **selection)
    session.rollback()
    assert dead_letters.list_dead_letters(session, DeadLetterFilters()) != []


def test_replay_of_thousands_is_a_few_bulk_statements(ledger: Any, session: Session) -> None:
    count = 2000
    dead_ids = bulk_dead_letters(session, count)
    counter = StatementCounter(ledger.engine)

    result = dead_letters.replay(session, replay_all=True, now=NOW)
    session.commit()

    assert sorted(result.replayed) == dead_ids
    assert len(result.pairs) == count
    chunks = -(-count // dead_letters.CHUNK_SIZE)
    assert len(counter.statements) == 1 + 4 * chunks  # the ids, then per chunk 1 + 3 updates
    assert session.scalar(select(func.count()).where(Outbox.status == "pending")) == count
    assert session.scalar(select(func.count()).where(DeadLetter.status == "replayed")) == count


def bulk_dead_letters(session: Session, count: int) -> list[int]:
    """`count` contacts with one dead-lettered decision each, inserted in bulk."""
    session.execute(
        insert(Contact),
        [{"email_key": f"c{n}@example.com", "created_at": T0} for n in range(count)],
    )
    contacts = list(session.scalars(select(Contact.id).order_by(Contact.id)))
    session.execute(insert(Event), [event_row(n, contact) for n, contact in enumerate(contacts)])
    events = list(session.execute(select(Event.id, Event.contact_id).order_by(Event.id)))
    session.execute(
        insert(Outbox),
        [
            {"event_id": e, "destination": "engage", "contact_id": c, "status": "dead_lettered"}
            for e, c in events
        ],
    )
    session.execute(
        insert(DeadLetter),
        [
            {"destination": "engage", "contact_id": c, "event_id": e, "reason": "max_age"}
            | {"detail": "gave up", "attempts": 9, "created_at": T0, "status": "open"}
            for e, c in events
        ],
    )
    session.commit()
    return list(session.scalars(select(DeadLetter.id).order_by(DeadLetter.id)))


def event_row(n: int, contact_id: int) -> dict[str, Any]:
    return {
        "public_id": str(uuid.uuid4()),
        "source_name": "signup",
        "delivery_id": f"msg_{n}",
        "body_sha256": "0" * 64,
        "contact_id": contact_id,
        "email": f"c{n}@example.com",
        "decision": "granted",
        "consent_source": "registration_form",
        "occurred_at": T0,
        "webhook_timestamp": int(T0.timestamp()),
        "received_at": T0,
    }


# --- enqueue ------------------------------------------------------------------------------------


def test_enqueue_stops_at_the_first_failure_and_at_the_limit() -> None:
    sent: list[tuple[str, int]] = []

    def publish(destination: str, contact_id: int) -> bool:
        if contact_id == 3:
            return False
        sent.append((destination, contact_id))
        return True

    pairs = {("engage", n) for n in range(1, 6)}
    assert dead_letters.enqueue(pairs, publish) == 2
    assert sent == [("engage", 1), ("engage", 2)]
    sent.clear()
    assert dead_letters.enqueue({("engage", n) for n in (5, 4, 6)}, publish, limit=2) == 2
    assert sent == [("engage", 4), ("engage", 5)]
