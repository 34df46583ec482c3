"""An erasure passed on to a destination's delete call (issue 17 section 4; docs/data-protection.md
#at-destinations), on SQLite and PostgreSQL, through the real app, a real Celery worker and beat
(the embedded broker), two Engage emulators and a MoEngage one: `engage` keeps the default (off),
`forget` and `moe` have `erase_at_destination = true`. The erased person is deleted at `forget`
and `moe` only (MoEngage by the customer_id the relay rendered), each row ends `done` with the
sealed identifier wiped; a transient vendor error waits in the ledger and is retried."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import text

from emulators import moengage
from emulators.engage import create_emulator_app
from emulators.server import EmulatorServer
from relay.ledger import export
from tests.helpers.evidence_world import EvidenceWorld
from tests.helpers.support import Process, celery_beat, emulator_contact, wait_for

pytestmark = pytest.mark.integration
WHO = {"requested_by": "DPO ticket 4712", "reason": "Art. 17 request, Art. 19 onwards"}
KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def forget() -> Iterator[str]:
    """The second Engage account: the one that is asked to delete."""
    with EmulatorServer(create_emulator_app()) as server:
        yield server.url


@pytest.fixture(scope="module")
def moe() -> Iterator[str]:
    """The MoEngage workspace, its users keyed by a customer_id rendered from the source id."""
    with EmulatorServer(moengage.create_emulator_app()) as server:
        yield server.url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest,
    engage: str,
    forget: str,
    moe: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    extra = f"""
[privacy]
destination_erasure_key = "{KEY}"

[destinations.forget]
kind = "mapp-engage"
base_url = "{forget}"
username = "api-user@example.com"
password = "engage-demo-password"
erase_at_destination = true

[destinations.moe]
kind = "moengage"
base_url = "{moe}"
app_id = "{moengage.APP_ID}"
api_key = "{moengage.API_KEY}"
customer_id = "crm-{{source_id}}"
erase_at_destination = true
"""
    workdir = tmp_path_factory.mktemp(f"forward-{request.param}")
    # transient failures give up after 6 s: the failed-row tests reach `failed` quickly
    delivery = {"retry_schedule_seconds": "[1.0]", "max_retry_age_seconds": "6"}
    world = EvidenceWorld(workdir, engage, database, extra, delivery)
    world.forget = forget  # type: ignore[attr-defined]
    world.moe = moe  # type: ignore[attr-defined]
    yield world


@pytest.fixture(scope="module")
def running(world: EvidenceWorld) -> Iterator[tuple[Process, Process]]:
    worker, beat = world.worker(), celery_beat(world.config, world.workdir)
    try:
        yield worker, beat
    finally:
        beat.stop()
        worker.stop()


def _delivered(world: EvidenceWorld, label: str) -> tuple[str, int]:
    email = f"Forward-{label}-{uuid.uuid4().hex[:8]}@Example.com"
    source_id = f"lead-{uuid.uuid4().hex[:8]}"  # moe's customer_id template needs it
    assert world.send(email, "granted", source_id=source_id).status_code == 202
    for url in (world.engage, world.forget):  # type: ignore[attr-defined]
        wait_for(lambda u=url: emulator_contact(u, email), what=f"the contact at {url}")
    return email, world.events(email=email)[0].contact_id


def _rows(world: EvidenceWorld, contact_id: int, where: str = "forget") -> list[dict[str, Any]]:
    query = text(
        "SELECT d.destination, d.status, d.attempts, d.sealed_address, d.detail, d.last_status "
        "FROM destination_erasures d JOIN erasures e ON e.id = d.erasure_id "
        "WHERE e.contact_id = :c AND d.destination = :d ORDER BY d.id"
    )
    with world.engine.connect() as connection:
        found = connection.execute(query, {"c": contact_id, "d": where})
        return [dict(row._mapping) for row in found]


def _faults(url: str, **values: Any) -> None:
    response = requests.put(f"{url}/_emulator/faults", json=values, timeout=5)
    assert response.status_code == 200, response.text


def test_an_erasure_deletes_the_contact_where_the_option_is_on_only(
    world: EvidenceWorld, running: tuple[Process, Process]
) -> None:
    email, contact_id = _delivered(world, "on")
    answer = world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    passed_on = answer.get_json()["destinations"]
    assert [(d["destination"], d["status"], d["attempts"]) for d in passed_on] == [
        ("forget", "pending", 0),
        ("moe", "pending", 0),
    ]
    forget = world.forget  # type: ignore[attr-defined]
    wait_for(lambda: emulator_contact(forget, email) is None, what="the delete at forget")
    wait_for(lambda: _rows(world, contact_id)[0]["status"] == "done", what="the row done")
    [row] = _rows(world, contact_id)
    assert row["destination"] == "forget" and row["sealed_address"] is None
    assert row["detail"] == "deleted" and row["attempts"] == 1
    assert emulator_contact(world.engage, email) is not None  # the default: not passed on
    exported = world.admin("GET", f"/admin/contacts/{contact_id}/export").get_json()
    [erased] = exported["erasures"]
    assert erased["destinations"][0]["status"] == "done"
    assert export.verify_export(exported) is None  # the status is not chain content
    page = world.ops_client().get(f"/ops/contacts/{contact_id}").get_data(as_text=True)
    assert "forget: done" in page


def test_a_transient_vendor_error_is_retried_until_the_delete_succeeds(
    world: EvidenceWorld, running: tuple[Process, Process]
) -> None:
    email, contact_id = _delivered(world, "retry")
    forget = world.forget  # type: ignore[attr-defined]
    _faults(forget, error_rate=1.0, error_status=503)
    try:
        assert (
            world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO).status_code == 200
        )
        wait_for(lambda: _rows(world, contact_id)[0]["attempts"] >= 1, what="a failed try")
        [row] = _rows(world, contact_id)
        assert row["status"] == "pending" and row["last_status"] == 503
        assert row["sealed_address"] and email.lower() not in row["sealed_address"].lower()
        assert email.lower() not in (row["detail"] or "").lower()
        assert emulator_contact(forget, email) is not None
    finally:
        _faults(forget, error_rate=0.0)
    wait_for(lambda: _rows(world, contact_id)[0]["status"] == "done", what="the retried delete")
    assert emulator_contact(forget, email) is None
    assert _rows(world, contact_id)[0]["attempts"] >= 2


def _moe_users(world: EvidenceWorld) -> dict[str, Any]:
    url = world.moe  # type: ignore[attr-defined]
    users: dict[str, Any] = requests.get(f"{url}/_emulator/state", timeout=5).json()["contacts"]
    return users


def test_moengage_deletes_the_user_by_its_rendered_customer_id(
    world: EvidenceWorld, running: tuple[Process, Process]
) -> None:
    email = f"Forward-moe-{uuid.uuid4().hex[:8]}@Example.com"
    source_id = f"lead-{uuid.uuid4().hex[:8]}"
    customer_id = f"crm-{source_id}"
    seeded = {"email": email, "customer_id": customer_id}
    url = world.moe  # type: ignore[attr-defined]
    assert requests.post(f"{url}/_emulator/contacts", json=seeded, timeout=5).ok
    assert world.send(email, "granted", source_id=source_id).status_code == 202
    wait_for(
        lambda: _moe_users(world)[email.lower()]["history"], what="the Track User write at moe"
    )
    contact_id = world.events(email=email)[0].contact_id
    answer = world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    wait_for(lambda: email.lower() not in _moe_users(world), what="Delete User at moe")
    wait_for(lambda: _rows(world, contact_id, "moe")[0]["status"] == "done", what="moe done")
    [row] = _rows(world, contact_id, "moe")
    assert row["sealed_address"] is None and row["last_status"] == 200
    assert row["detail"].startswith("accepted")


def _erasure_id(world: EvidenceWorld, contact_id: int) -> str:
    query = text("SELECT public_id FROM erasures WHERE contact_id = :c")
    with world.engine.connect() as connection:
        return str(connection.execute(query, {"c": contact_id}).scalar_one())


def _audit_actions(world: EvidenceWorld) -> list[str]:
    entries = world.admin("GET", "/admin/audit").get_json()["entries"]
    return [entry["action"] for entry in entries]


def test_a_failed_erasure_keeps_its_seal_until_retried_or_acknowledged(
    world: EvidenceWorld, running: tuple[Process, Process]
) -> None:
    email, contact_id = _delivered(world, "failed")
    forget = world.forget  # type: ignore[attr-defined]
    _faults(forget, error_rate=1.0, error_status=503)  # until max_retry_age_seconds
    try:
        assert (
            world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO).status_code == 200
        )
        wait_for(lambda: _rows(world, contact_id)[0]["status"] == "failed", what="failed")
        assert _rows(world, contact_id)[0]["sealed_address"]  # kept for a retry
    finally:
        _faults(forget, error_rate=0.0)
    erasure_id = _erasure_id(world, contact_id)
    base = f"/admin/erasures/{erasure_id}/destinations/forget"
    answer = world.admin("POST", f"{base}/retry")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    wait_for(lambda: _rows(world, contact_id)[0]["status"] == "done", what="the retried delete")
    assert emulator_contact(forget, email) is None
    assert _rows(world, contact_id)[0]["sealed_address"] is None
    assert world.admin("POST", f"{base}/retry").status_code == 409  # done: nothing to retry
    assert "erasure-retry" in _audit_actions(world)


def test_an_acknowledged_failure_loses_its_seal_and_cannot_be_retried(
    world: EvidenceWorld, running: tuple[Process, Process]
) -> None:
    _email, contact_id = _delivered(world, "ack")
    forget = world.forget  # type: ignore[attr-defined]
    _faults(forget, error_rate=1.0, error_status=503)
    try:
        world.admin("POST", f"/admin/contacts/{contact_id}/erase", json=WHO)
        wait_for(lambda: _rows(world, contact_id)[0]["status"] == "failed", what="failed")
    finally:
        _faults(forget, error_rate=0.0)
    erasure_id = _erasure_id(world, contact_id)
    code, out, err = world.cli("erasures", "acknowledge", erasure_id, "forget", "--note", "T-9")
    assert code == 0, err
    [row] = _rows(world, contact_id)
    assert row["status"] == "acknowledged" and row["sealed_address"] is None
    code, _out, err = world.cli("erasures", "retry", erasure_id, "forget")
    assert code == 1 and "failed one" in err
    assert "erasure-acknowledge" in _audit_actions(world)
