"""Erasure that keeps the proof (issue 17, section 4) on SQLite and PostgreSQL, through the real
app, a real Celery worker and the Engage emulator: a pending decision erased before the worker
runs is never sent; a delivered contact erased through the CLI keeps a verifiable chain with no
address left in the ledger or its export; a later decision from the same address is a new
contact, linked to the old one only through the keyed pseudonym; the operator page's button."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from relay.ledger import erasure
from tests.helpers.evidence_world import PSEUDONYM_KEY, EvidenceWorld
from tests.helpers.input_world import csrf
from tests.helpers.support import Process, emulator_contact, wait_for

pytestmark = pytest.mark.integration
WHO = {"requested_by": "DPO ticket 4711", "reason": "Art. 17 request"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    extra = f'\n[privacy]\npseudonym_key = "{PSEUDONYM_KEY}"\n'
    yield EvidenceWorld(tmp_path_factory.mktemp(f"erase-{request.param}"), engage, database, extra)


@pytest.fixture(scope="module")
def worker(world: EvidenceWorld) -> Iterator[Process]:
    started = world.worker()
    try:
        yield started
    finally:
        started.stop()


def _address(label: str) -> str:
    return f"Erase-{label}-{uuid.uuid4().hex[:8]}@Example.com"


def _at_engage(world: EvidenceWorld, email: str, consent: str) -> bool:
    found = emulator_contact(world.engage, email) or {}
    return found.get("attributes", {}).get("tracking_consent") == consent


def _rows_holding(world: EvidenceWorld, address: str) -> list[str]:
    """Every ledger text column that still holds the address, in any letter case."""
    checks = {
        "contacts.email_key": "SELECT email_key FROM contacts",
        "events.email": "SELECT email FROM events",
        "delivery_attempts.detail": "SELECT detail FROM delivery_attempts",
        "dead_letters": "SELECT detail || coalesce(last_body, '') FROM dead_letters",
        "delivery_state.last_error": "SELECT last_error FROM delivery_state",
        "erasures": "SELECT requested_by || reason FROM erasures",
    }
    found = []
    with world.engine.connect() as connection:
        for name, query in checks.items():
            values = [row[0] or "" for row in connection.execute(text(query))]
            if any(address.lower() in value.lower() for value in values):
                found.append(name)
    return found


def _outbox(world: EvidenceWorld, contact_id: int) -> list[str]:
    with world.engine.connect() as connection:
        query = text("SELECT status FROM outbox WHERE contact_id = :c ORDER BY id")
        return [row[0] for row in connection.execute(query, {"c": contact_id})]


def test_a_pending_decision_erased_before_the_worker_runs_is_never_sent(
    world: EvidenceWorld,
) -> None:
    email, control = _address("pending"), _address("control")
    assert world.send(email, "granted", notice_version="v1").status_code == 202
    [event] = world.events(email=email)
    assert _outbox(world, event.contact_id) == ["pending"]  # no worker yet: the task waits
    answer = world.admin("POST", f"/admin/contacts/{event.contact_id}/erase", json=WHO)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    erased = answer.get_json()
    assert erased["settled_deliveries"] == 1 and erased["pseudonymised"] is True
    assert erased["chain_seq"] == 2
    assert _outbox(world, event.contact_id) == ["erased"]
    started = world.worker()
    try:
        # The queued task for the erased contact runs and finds nothing pending (the erasure
        # settled its row): it leaves without the lease and without a write.
        started.wait_output('"outcome": "settled"')
        assert world.send(control, "granted").status_code == 202
        wait_for(lambda: _at_engage(world, control, "granted"), what="the control decision")
    finally:
        started.stop()
    assert emulator_contact(world.engage, email) is None
    assert _outbox(world, event.contact_id) == ["erased"]
    assert _rows_holding(world, email) == []
    verified = world.admin("POST", "/admin/ledger/verify", json={"contact_id": event.contact_id})
    assert verified.get_json()["ok"] is True


def test_a_delivered_contact_erased_by_the_cli_keeps_a_verifiable_proof(
    world: EvidenceWorld, worker: Process, tmp_path: Path
) -> None:
    email = _address("cli")
    assert world.send(email, "granted", purposes=["news"]).status_code == 202
    assert world.send(email, "withdrawn").status_code == 202
    wait_for(lambda: _at_engage(world, email, "withdrawn"), what="the withdrawal at Engage")
    contact_id = world.events(email=email)[0].contact_id
    wait_for(lambda: "pending" not in _outbox(world, contact_id), what="settled deliveries")
    code, _, err = world.cli("contacts", "erase", "--email", email, "--by", "x", "--reason", "y")
    assert code == 2 and "--yes" in err  # not without confirmation
    argv = ["--by", WHO["requested_by"], "--reason", WHO["reason"], "--yes", "--json"]
    code, out, err = world.cli("contacts", "erase", "--email", email, *argv)
    assert code == 0, err
    assert json.loads(out)["decisions"] == 2
    assert _rows_holding(world, email) == []
    assert world.events(contact_id=contact_id)[0].subject_salt is None
    code, out, _ = world.cli("ledger", "verify", "--contact-id", str(contact_id))
    assert code == 0 and "intact" in out
    record = world.admin("GET", f"/admin/contacts/{contact_id}/export")
    body = record.get_data(as_text=True)
    assert email.lower() not in body.lower()
    exported = record.get_json()
    [kept] = exported["erasures"]
    assert (kept["requested_by"], kept["reason"]) == (WHO["requested_by"], WHO["reason"])
    assert [d["tracking_consent"] for d in exported["decisions"]] == ["granted", "withdrawn"]
    assert exported["decisions"][0]["evidence"]["purposes"] == ["news"]
    path = tmp_path / "erased.json"
    path.write_text(body)
    code, out, _ = world.cli("ledger", "verify-export", str(path))
    assert code == 0 and out.startswith("intact: 3 link(s)")
    code, _, err = world.cli("contacts", "erase", "--contact-id", str(contact_id), *argv)
    assert code == 1 and "erased already" in err


def test_removing_an_erasure_record_breaks_the_chain(world: EvidenceWorld, worker: Process) -> None:
    """Deleting the erasure row would make the salt-less decisions look erased by no one."""
    email = _address("tamper")
    assert world.send(email, "granted").status_code == 202
    contact_id = world.events(email=email)[0].contact_id
    assert world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO).status_code == 200
    assert world.execute("DELETE FROM erasures WHERE contact_id = :c", c=contact_id) == 1
    verified = world.admin("POST", "/admin/ledger/verify", json={"contact_id": contact_id})
    [broken] = verified.get_json()["broken"]
    assert broken["contact_id"] == contact_id


def test_a_later_decision_from_the_address_is_a_new_contact_linked_only_by_the_key(
    world: EvidenceWorld, worker: Process
) -> None:
    email = _address("again")
    assert world.send(email, "granted").status_code == 202
    old = world.events(email=email)[0].contact_id
    assert world.admin("POST", f"/admin/contacts/{old}/erase", json=WHO).status_code == 200
    assert world.send(email, "withdrawn").status_code == 202
    [event] = world.events(email=email)
    assert event.contact_id != old
    wait_for(lambda: _at_engage(world, email, "withdrawn"), what="the new contact's decision")
    with world.runtime.sessions() as session:
        assert erasure.linked_erasures(session, PSEUDONYM_KEY, email.upper()) == [old]
        assert erasure.linked_erasures(session, "another-key-" + "z" * 32, email) == []
        assert erasure.linked_erasures(session, None, email) == []


def test_the_operator_page_erases_with_confirmation(world: EvidenceWorld, worker: Process) -> None:
    email = _address("ops")
    assert world.send(email, "granted").status_code == 202
    contact_id = world.events(email=email)[0].contact_id
    ops = world.ops_client()
    page = ops.get(f"/ops/contacts/{contact_id}").get_data(as_text=True)
    action = f'action="/ops/contacts/{contact_id}/erase"'
    assert action in page
    form = {**WHO, "csrf_token": csrf(ops)}
    unconfirmed = ops.post(f"/ops/contacts/{contact_id}/erase", data=form)
    assert unconfirmed.status_code == 303
    assert world.events(email=email)  # nothing erased without the box ticked
    forged = ops.post(f"/ops/contacts/{contact_id}/erase", data={**WHO, "confirm": "erase"})
    assert forged.status_code in (400, 403)  # no CSRF token
    assert world.events(email=email)
    done = ops.post(f"/ops/contacts/{contact_id}/erase", data={**form, "confirm": "erase"})
    assert done.status_code == 303
    assert world.events(email=email) == []
    after = ops.get(f"/ops/contacts/{contact_id}").get_data(as_text=True)
    assert 'id="erasures"' in after and WHO["reason"] in after
    assert email.lower() not in after.lower() and action not in after


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/admin/contacts/99999999/erase", WHO, 404),
        ("/admin/contacts/1/erase", {"requested_by": "x"}, 422),
        ("/admin/contacts/1/erase", {**WHO, "colour": "red"}, 422),
        ("/admin/contacts/1/erase", {"requested_by": "", "reason": "y"}, 422),
    ],
)
def test_bad_erasure_requests_are_precise_problems(
    world: EvidenceWorld, path: str, body: dict[str, str], status: int
) -> None:
    response = world.admin("POST", path, json=body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"


def test_erasing_twice_is_a_conflict(world: EvidenceWorld) -> None:
    email = _address("twice")
    assert world.send(email, "granted").status_code == 202
    contact_id = world.events(email=email)[0].contact_id
    assert world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO).status_code == 200
    again = world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO)
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
