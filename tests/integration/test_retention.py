"""Retention (issue 17, section 5) on SQLite and PostgreSQL, through the real app: pruning
removes exactly the rows past `[retention]` (delivery attempts, ignored events, resolved dead
letters, the outbox rows of superseded decisions) and never a decision, an erasure or an audit
entry; a failed erasure at a destination past its days is acknowledged, its sealed identifier
wiped, audited as the system; every chain still verifies afterwards; the operator page and the
metrics report it; and pruning in small batches while the intake writes refuses no webhook."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from relay.ledger import retention
from relay.messaging.client import create_celery_client
from relay.messaging.names import PRUNE_TASK
from tests.helpers.evidence_world import EvidenceWorld
from tests.helpers.support import wait_for

pytestmark = pytest.mark.integration
RETENTION = """
[retention]
delivery_attempts_days = 30
ignored_events_days = 30
resolved_dead_letters_days = 30
superseded_deliveries_days = 30
failed_destination_erasures_days = 30
batch_size = 5
"""
OLD = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).replace(tzinfo=None)
WHO = {"requested_by": "DPO ticket 5", "reason": "Art. 17"}
RECENT = (dt.datetime.now(dt.UTC) - dt.timedelta(days=5)).replace(tzinfo=None)


@pytest.fixture(params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    """One ledger per test: the tests count every row of the pruned tables."""
    database = request.getfixturevalue("own_postgres_url") if request.param == "postgres" else None
    yield EvidenceWorld(
        tmp_path_factory.mktemp(f"keep-{request.param}"), engage, database, RETENTION
    )


def _count(world: EvidenceWorld, table: str) -> int:
    with world.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def _ignored(world: EvidenceWorld, count: int, when: dt.datetime) -> None:
    rows = [{"d": f"old-{uuid.uuid4().hex}", "at": when, "sha": "0" * 64} for _ in range(count)]
    with world.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO ignored_events (source_name, delivery_id, event_type, reason, "
                "body_sha256, received_at) VALUES ('signup', :d, 'x', 'test', :sha, :at)"
            ),
            rows,
        )


def _decisions(world: EvidenceWorld) -> tuple[int, list[int]]:
    """A contact with two decisions: (its id, the event ids)."""
    email = f"Keep-{uuid.uuid4().hex[:8]}@Example.com"
    assert world.send(email, "granted").status_code == 202
    assert world.send(email, "withdrawn").status_code == 202
    events = world.events(email=email)
    return events[0].contact_id, [event.id for event in events]


def _history(world: EvidenceWorld, contact: int, events: list[int]) -> None:
    """What a worker would have left: the first decision superseded long ago, attempts old and
    recent, dead letters resolved long ago, resolved lately and still open."""
    first, second = events
    world.execute(
        "UPDATE outbox SET status = 'superseded', settled_at = :at WHERE event_id = :e",
        at=OLD,
        e=first,
    )
    world.execute(
        "UPDATE outbox SET status = 'delivered', settled_at = :at WHERE event_id = :e",
        at=OLD,
        e=second,
    )
    attempt = (
        "INSERT INTO delivery_attempts (destination, contact_id, event_id, started_at, "
        "finished_at, outcome) VALUES ('engage', :c, :e, :at, :at, 'delivered')"
    )
    for when in (OLD, OLD, RECENT):
        world.execute(attempt, c=contact, e=second, at=when)
    dead = (
        "INSERT INTO dead_letters (destination, contact_id, event_id, reason, detail, attempts, "
        "created_at, status, resolved_at, replay_count) "
        "VALUES ('engage', :c, :e, 'rejected', 'x', 1, :at, :status, :resolved, 0)"
    )
    world.execute(dead, c=contact, e=first, at=OLD, status="replayed", resolved=OLD)
    world.execute(dead, c=contact, e=first, at=OLD, status="superseded", resolved=RECENT)
    world.execute(dead, c=contact, e=second, at=OLD, status="open", resolved=None)


def test_pruning_removes_only_what_is_past_retention(world: EvidenceWorld) -> None:
    contact, events = _decisions(world)
    _history(world, contact, events)
    _ignored(world, 12, OLD)
    _ignored(world, 1, RECENT)
    assert world.admin("GET", f"/admin/contacts/{contact}/export").status_code == 200  # audited
    kept = {table: _count(world, table) for table in ("events", "contacts", "audit_entries")}
    before = _pruned_metric(world)

    pruned = retention.prune(world.runtime.sessions, world.settings.retention)

    assert pruned == {
        "delivery_attempts": 2,
        "ignored_events": 12,
        "dead_letters": 1,
        "outbox": 1,
        "ignored_bodies": 0,
        "failed_destination_erasures": 0,
    }
    assert {table: _count(world, table) for table in kept} == kept
    assert _count(world, "delivery_attempts") == 1
    assert _count(world, "ignored_events") == 1
    assert _count(world, "dead_letters") == 2  # the one resolved lately and the open one
    assert _count(world, "outbox") == 1  # the delivered decision's row
    verified = world.admin("POST", "/admin/ledger/verify").get_json()
    assert verified["ok"] is True and verified["audit"]["entries"] == 1
    assert retention.prune(world.runtime.sessions, world.settings.retention) == dict.fromkeys(
        pruned, 0
    )
    page = world.ops_client().get("/ops").get_data(as_text=True)
    assert 'id="retention"' in page and "ignored_events" in page
    assert _pruned_metric(world) == before + 12  # the counter is per process, not per ledger


def _pruned_metric(world: EvidenceWorld, table: str = "ignored_events") -> float:
    series = f'consent_relay_pruned_total{{table="{table}"}} '
    lines = [line for line in world.metrics().splitlines() if line.startswith(series)]
    return float(lines[0].removeprefix(series)) if lines else 0.0


def test_pruning_while_the_intake_writes_refuses_no_webhook(world: EvidenceWorld) -> None:
    _ignored(world, 150, OLD)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["pruned"] = retention.prune(world.runtime.sessions, world.settings.retention)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    pruning = threading.Thread(target=run)
    pruning.start()
    answers = [
        world.send(f"Load-{n}-{uuid.uuid4().hex[:6]}@example.com", "granted") for n in range(30)
    ]
    pruning.join(timeout=120)
    assert not pruning.is_alive()
    assert "error" not in outcome
    assert [answer.status_code for answer in answers] == [202] * 30
    assert outcome["pruned"]["ignored_events"] == 150  # 30 batches of 5
    assert _count(world, "ignored_events") == 0
    assert _count(world, "events") == 30


def test_a_real_worker_runs_the_beat_task(world: EvidenceWorld) -> None:
    """The beat's task by name, through the broker, to a Celery worker process."""
    _ignored(world, 7, OLD)
    worker = world.worker()
    try:
        create_celery_client(world.settings).send_task(PRUNE_TASK)
        # The run is recorded after its last batch: wait for the record, not for the rows.
        last = wait_for(lambda: _last_run(world), what="the worker's pruning run recorded")
    finally:
        worker.stop()
    assert last[1]["ignored_events"] == 7
    assert _count(world, "ignored_events") == 0


def _last_run(world: EvidenceWorld) -> Any:
    with world.runtime.sessions() as session:
        return retention.last_run(session)


def _passed_on(world: EvidenceWorld, rows: list[tuple[str, str, str | None, dt.datetime]]) -> str:
    """An erased contact whose erasure has these destination rows (name, status, seal, when it
    ended), as the worker leaves them (relay/ledger/destination_erasures.py `settle`)."""
    contact, _events = _decisions(world)
    assert world.admin("POST", f"/admin/contacts/{contact}/erase", json=WHO).status_code == 200
    with world.engine.connect() as connection:
        found = connection.execute(
            text("SELECT id, public_id FROM erasures WHERE contact_id = :c"), {"c": contact}
        ).one()
    insert = (
        "INSERT INTO destination_erasures (erasure_id, destination, status, sealed_address, "
        "attempts, created_at, finished_at, detail) "
        "VALUES (:e, :d, :s, :seal, 1, :at, :at, 'refused')"
    )
    for name, status, seal, when in rows:
        world.execute(insert, e=found.id, d=name, s=status, seal=seal, at=when)
    return str(found.public_id)


def _seals(world: EvidenceWorld) -> dict[str, tuple[str, bool]]:
    query = text("SELECT destination, status, sealed_address FROM destination_erasures")
    with world.engine.connect() as connection:
        return {d: (s, seal is not None) for d, s, seal in connection.execute(query)}


def test_a_failed_erasure_at_a_destination_loses_its_seal_after_its_days(
    world: EvidenceWorld,
) -> None:
    erasure_id = _passed_on(
        world,
        [
            ("old", "failed", "gAAAA-sealed", OLD),
            ("recent", "failed", "gAAAA-sealed", RECENT),
            ("unsealed", "failed", None, OLD),  # failed at capture: nothing to wipe
            ("done", "done", None, OLD),
        ],
    )

    before = _pruned_metric(world, "failed_destination_erasures")
    pruned = retention.prune(world.runtime.sessions, world.settings.retention)

    assert pruned["failed_destination_erasures"] == 1
    assert _pruned_metric(world, "failed_destination_erasures") == before + 1
    assert _seals(world) == {
        "old": ("acknowledged", False),
        "recent": ("failed", True),
        "unsealed": ("failed", False),
        "done": ("done", False),
    }
    [entry] = [
        e
        for e in world.admin("GET", "/admin/audit").get_json()["entries"]
        if e["action"] == "erasure-acknowledge"
    ]
    assert (entry["actor_kind"], entry["actor"], entry["channel"]) == (
        "system",
        "retention",
        "beat",
    )
    assert entry["targets"] == [f"erasure {erasure_id}", "destination old"]
    assert entry["outcome"] == "acknowledged: retention: failed over 30 days ago"
    assert world.admin("POST", "/admin/ledger/verify").get_json()["ok"] is True
    again = retention.prune(world.runtime.sessions, world.settings.retention)
    assert again["failed_destination_erasures"] == 0
    page = world.ops_client().get("/ops").get_data(as_text=True)
    assert "failed_destination_erasures" in page
