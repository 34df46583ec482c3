"""The operator audit log (issue 17, section 7) on SQLite and PostgreSQL, through the real app
and the CLI: every pause, resume, replay, export and erasure of the admin API, the operator page
and the CLI is an entry with who, when, from where, what and the outcome; the log is shown on
the operator page and exported as JSON and CSV; a changed, removed or inserted entry is caught
by `consent-relay ledger verify` and POST /admin/ledger/verify (direct database tampering)."""

from __future__ import annotations

import csv
import getpass
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from relay.ledger.audit import token_fingerprint
from tests.helpers.evidence_world import EvidenceWorld
from tests.helpers.input_world import ADMIN_TOKEN, csrf

pytestmark = pytest.mark.integration
WHO = {"requested_by": "DPO ticket 99", "reason": "Art. 17 request"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield EvidenceWorld(tmp_path_factory.mktemp(f"audit-{request.param}"), engage, database)


def _entries(world: EvidenceWorld) -> list[dict[str, Any]]:
    answer = world.admin("GET", "/admin/audit")
    assert answer.status_code == 200
    entries: list[dict[str, Any]] = answer.get_json()["entries"]
    return entries


def _newest(world: EvidenceWorld, count: int) -> list[dict[str, Any]]:
    """The newest `count` entries, oldest first."""
    return list(reversed(_entries(world)[:count]))


def _contact(world: EvidenceWorld) -> int:
    email = f"Audit-{uuid.uuid4().hex[:8]}@Example.com"
    assert world.send(email, "granted").status_code == 202
    return world.events(email=email)[0].contact_id


def test_pause_and_resume_are_audited_from_every_channel(world: EvidenceWorld) -> None:
    fingerprint = token_fingerprint(ADMIN_TOKEN)
    forged = {"X-Forwarded-For": "203.0.113.9"}  # no trusted proxies: not believed
    paused = world.admin("POST", "/admin/destinations/engage/pause", json={"reason": "vendor"})
    assert paused.status_code == 200
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **forged}
    resumed = world.client.post("/admin/destinations/engage/resume", headers=headers)
    assert resumed.status_code == 200
    ops = world.ops_client()
    form = {"reason": "maintenance", "csrf_token": csrf(ops)}
    assert ops.post("/ops/destinations/engage/pause", data=form).status_code == 303
    form = {"csrf_token": csrf(ops)}
    assert ops.post("/ops/destinations/engage/resume", data=form).status_code == 303
    assert world.cli("destinations", "pause", "engage", "--reason", "cli pause")[0] == 0
    assert world.cli("destinations", "resume", "engage")[0] == 0
    assert world.cli("destinations", "resume", "engage")[0] == 0
    seen = [
        (e["action"], e["actor_kind"], e["actor"], e["channel"], e["client"], e["outcome"])
        for e in _newest(world, 7)
    ]
    user = getpass.getuser()
    assert seen == [
        ("pause", "admin-token", fingerprint, "admin-api", "127.0.0.1", "paused: vendor"),
        ("resume", "admin-token", fingerprint, "admin-api", "127.0.0.1", "resumed"),
        ("pause", "operator", "operator", "ops-page", "127.0.0.1", "paused: maintenance"),
        ("resume", "operator", "operator", "ops-page", "127.0.0.1", "resumed"),
        ("pause", "cli", user, "cli", None, "paused: cli pause"),
        ("resume", "cli", user, "cli", None, "resumed"),
        ("resume", "cli", user, "cli", None, "was not paused: nothing changed"),
    ]
    assert all(e["targets"] == ["engage"] for e in _newest(world, 7))
    assert ADMIN_TOKEN not in json.dumps(_entries(world))


def test_replay_export_and_erasure_are_audited(world: EvidenceWorld) -> None:
    unknown = world.admin("POST", "/admin/dead-letters/99999999/replay")
    assert unknown.status_code == 404
    assert world.cli("dead-letters", "replay", "--all")[0] == 0
    first, second, third = _contact(world), _contact(world), _contact(world)
    assert world.admin("GET", f"/admin/contacts/{first}/export?format=csv").status_code == 200
    assert world.cli("contacts", "export", "--contact-id", str(first))[0] == 0
    ops = world.ops_client()
    assert ops.get(f"/ops/contacts/{first}/export.json").status_code == 200
    erased = world.admin("POST", f"/admin/contacts/{first}/erase", json=WHO)
    assert erased.status_code == 200
    argv = ["--by", "x", "--reason", "y", "--yes"]
    assert world.cli("contacts", "erase", "--contact-id", str(second), *argv)[0] == 0
    form = {**WHO, "confirm": "erase", "csrf_token": csrf(ops)}
    assert ops.post(f"/ops/contacts/{third}/erase", data=form).status_code == 303
    seen = [(e["action"], e["channel"], e["targets"][:1], e["outcome"]) for e in _newest(world, 8)]
    assert seen[:5] == [
        ("replay", "admin-api", [], "replayed=0 skipped=0 unknown=1"),
        ("replay", "cli", [], "replayed=0 skipped=0 unknown=0"),
        ("export", "admin-api", [f"contact {first}"], "as csv"),
        ("export", "cli", [f"contact {first}"], "as json"),
        ("export", "ops-page", [f"contact {first}"], "as json"),
    ]
    erasures = [(e["action"], e["channel"], e["targets"][0]) for e in _newest(world, 3)]
    assert erasures == [
        ("erasure", "admin-api", f"contact {first}"),
        ("erasure", "cli", f"contact {second}"),
        ("erasure", "ops-page", f"contact {third}"),
    ]
    assert _newest(world, 1)[0]["targets"][1].startswith("erasure ")
    assert _newest(world, 1)[0]["outcome"].startswith("erased: 1 decision(s)")


def test_the_log_is_shown_and_exported(world: EvidenceWorld) -> None:
    assert world.admin("POST", "/admin/destinations/engage/resume").status_code == 200
    newest = _entries(world)[0]
    page = world.ops_client().get("/ops/audit")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="audit"' in html and newest["at"] in html and "Audit log" in html
    assert world.client.get("/ops/audit").status_code in (302, 303)  # signed in only
    answer = world.admin("GET", "/admin/audit?format=csv&limit=1")
    assert answer.mimetype == "text/csv"
    [row] = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert (row["seq"], row["action"], row["chain_hash"]) == (
        str(newest["seq"]),
        "resume",
        newest["chain_hash"],
    )
    code, out, _ = world.cli("audit", "export")
    exported = json.loads(out)
    assert code == 0 and exported[-1] == newest
    assert [e["seq"] for e in exported] == list(range(1, len(exported) + 1))
    code, out, _ = world.cli("audit", "export", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("seq,at,actor_kind")
    bad = world.admin("GET", "/admin/audit?limit=0")
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"


def _verify(world: EvidenceWorld) -> dict[str, Any]:
    answer = world.admin("POST", "/admin/ledger/verify")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.get_json()
    return body


def test_a_changed_removed_or_inserted_entry_is_caught(world: EvidenceWorld) -> None:
    assert world.admin("POST", "/admin/destinations/engage/resume").status_code == 200
    assert _verify(world)["ok"] is True
    code, out, _ = world.cli("ledger", "verify")
    assert code == 0 and "audit log:" in out and "intact" in out.splitlines()[-1]
    with world.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM audit_entries ORDER BY seq"))
        saved = [dict(row._mapping) for row in rows]
    middle, newest = saved[len(saved) // 2], saved[-1]

    world.execute("UPDATE audit_entries SET actor = 'someone else' WHERE seq = :s", s=middle["seq"])
    broken = _verify(world)
    assert broken["ok"] is False
    assert broken["audit"]["broken"]["seq"] == middle["seq"]
    code, out, _ = world.cli("ledger", "verify")
    assert code == 1 and f"first broken entry {middle['seq']}" in out
    world.execute(
        "UPDATE audit_entries SET actor = :a WHERE seq = :s", a=middle["actor"], s=middle["seq"]
    )
    assert _verify(world)["ok"] is True

    for row in (middle, newest):  # a removed entry, in the middle and at the head
        assert world.execute("DELETE FROM audit_entries WHERE seq = :s", s=row["seq"]) == 1
        assert _verify(world)["audit"]["ok"] is False
        _insert(world, row)
        assert _verify(world)["ok"] is True

    extra = {**newest, "id": newest["id"] + 1000, "seq": newest["seq"] + 1}
    _insert(world, extra)  # an entry written outside the relay: the head does not know it
    assert _verify(world)["audit"]["broken"]["seq"] == extra["seq"]
    world.execute("DELETE FROM audit_entries WHERE seq = :s", s=extra["seq"])
    assert _verify(world)["ok"] is True


def _insert(world: EvidenceWorld, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    world.execute(f"INSERT INTO audit_entries ({columns}) VALUES ({values})", **row)  # noqa: S608


def test_a_replay_on_the_operator_page_is_audited(world: EvidenceWorld) -> None:
    contact = _contact(world)
    [event] = world.events(contact_id=contact)
    world.execute(
        "INSERT INTO dead_letters (destination, contact_id, event_id, reason, detail, attempts, "
        "created_at, status, replay_count) "
        "VALUES ('engage', :c, :e, 'rejected', 'x', 1, :at, 'open', 0)",
        c=contact,
        e=event.id,
        at=event.received_at.replace(tzinfo=None),
    )
    with world.engine.connect() as connection:
        query = text("SELECT max(id) FROM dead_letters WHERE contact_id = :c")
        dead_id = connection.execute(query, {"c": contact}).scalar_one()
    ops = world.ops_client()
    replayed = ops.post(f"/ops/dead-letters/{dead_id}/replay", data={"csrf_token": csrf(ops)})
    assert replayed.status_code == 303
    [entry] = _newest(world, 1)
    assert (entry["action"], entry["channel"], entry["actor"]) == ("replay", "ops-page", "operator")
    assert entry["targets"] == [f"dead-letter {dead_id}"]
    assert entry["outcome"] == "replayed=1 skipped=0 unknown=0"
