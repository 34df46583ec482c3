"""The tamper-evident chain (issue 17, section 2) on SQLite and PostgreSQL: decisions recorded
through the real app, then the database edited directly (UPDATE, DELETE, INSERT, reordering),
and `consent-relay ledger verify`, the admin API and the metric each naming the break."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.evidence_world import EvidenceWorld

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield EvidenceWorld(tmp_path_factory.mktemp(f"chain-{request.param}"), engage, database)


def person(world: EvidenceWorld, decisions: int = 3) -> int:
    """A new contact with `decisions` decisions (granted, denied, granted, ...): its id."""
    email = f"chain-{uuid.uuid4().hex[:10]}@example.com"
    for index in range(decisions):
        answer = world.send(email, ("granted", "denied")[index % 2], purposes=["newsletter"])
        assert answer.status_code == 202, answer.get_data(as_text=True)
    return world.events(email=email)[0].contact_id


def verify(world: EvidenceWorld, contact_id: int) -> dict:
    response = world.admin("POST", "/admin/ledger/verify", json={"contact_id": contact_id})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def first_break(world: EvidenceWorld, contact_id: int) -> dict:
    result = verify(world, contact_id)
    assert result["ok"] is False, "the tampering went unnoticed"
    [found] = result["broken"]
    assert found["contact_id"] == contact_id
    return found


def test_an_untouched_ledger_verifies(world: EvidenceWorld) -> None:
    contact_id = person(world)
    result = verify(world, contact_id)
    assert result == {**result, "ok": True, "contacts": 1, "links": 3, "broken": []}
    code, out, _ = world.cli("ledger", "verify")
    assert code == 0, out
    assert out.endswith("intact\n")


def test_each_link_chains_to_the_previous_one(world: EvidenceWorld) -> None:
    contact_id = person(world)
    events = world.events(contact_id=contact_id)
    assert [event.chain_seq for event in events] == [1, 2, 3]
    assert len({event.chain_hash for event in events}) == 3
    assert all(event.subject_salt and event.subject_digest for event in events)


def test_an_updated_decision_is_caught(world: EvidenceWorld) -> None:
    contact_id = person(world)
    second = world.events(contact_id=contact_id)[1]
    world.execute("UPDATE events SET decision = 'granted' WHERE id = :id", id=second.id)
    found = first_break(world, contact_id)
    assert found["seq"] == 2
    assert found["ref"] == f"event {second.public_id}"
    assert "does not match" in found["reason"]


def test_an_updated_evidence_field_is_caught(world: EvidenceWorld) -> None:
    contact_id = person(world)
    first = world.events(contact_id=contact_id)[0]
    world.execute("UPDATE events SET lawful_basis = 'contract' WHERE id = :id", id=first.id)
    assert first_break(world, contact_id)["seq"] == 1


def test_an_updated_address_is_caught(world: EvidenceWorld) -> None:
    contact_id = person(world)
    first = world.events(contact_id=contact_id)[0]
    world.execute(
        "UPDATE events SET email = 'someone-else@example.com' WHERE id = :id", id=first.id
    )
    found = first_break(world, contact_id)
    assert (found["seq"], found["reason"]) == (1, "the address does not match the subject digest")


def test_a_deleted_decision_in_the_middle_is_caught(world: EvidenceWorld) -> None:
    contact_id = person(world)
    second = world.events(contact_id=contact_id)[1]
    world.execute("DELETE FROM outbox WHERE event_id = :id", id=second.id)
    assert world.execute("DELETE FROM events WHERE id = :id", id=second.id) == 1
    found = first_break(world, contact_id)
    assert found["seq"] == 2
    assert "missing" in found["reason"]


def test_a_deleted_newest_decision_is_caught_by_the_head(world: EvidenceWorld) -> None:
    contact_id = person(world)
    last = world.events(contact_id=contact_id)[-1]
    world.execute("DELETE FROM outbox WHERE event_id = :id", id=last.id)
    world.execute("DELETE FROM events WHERE id = :id", id=last.id)
    found = first_break(world, contact_id)
    assert (found["seq"], found["ref"]) == (3, "head")


def test_reordered_decisions_are_caught(world: EvidenceWorld) -> None:
    contact_id = person(world)
    first, second, _ = world.events(contact_id=contact_id)
    world.execute("UPDATE events SET chain_seq = 99 WHERE id = :id", id=first.id)
    world.execute("UPDATE events SET chain_seq = 1 WHERE id = :id", id=second.id)
    world.execute("UPDATE events SET chain_seq = 2 WHERE id = :id", id=first.id)
    assert first_break(world, contact_id)["seq"] == 1


@pytest.mark.parametrize("chained", [False, True], ids=["unchained", "forged-link"])
def test_an_inserted_decision_is_caught(world: EvidenceWorld, chained: bool) -> None:
    contact_id = person(world)
    model = world.events(contact_id=contact_id)[0]
    world.execute(
        "INSERT INTO events (public_id, source_name, delivery_id, body_sha256, contact_id, email,"
        " decision, consent_source, consent_source_id, occurred_at, occurred_at_given,"
        " webhook_timestamp, received_at, chain_seq, chain_hash)"
        " SELECT :public_id, source_name, :delivery_id, body_sha256, contact_id, email,"
        " 'withdrawn', consent_source, consent_source_id, occurred_at, occurred_at_given,"
        " webhook_timestamp, received_at, :seq, :hash FROM events WHERE id = :id",
        public_id=str(uuid.uuid4()),
        delivery_id=f"forged-{uuid.uuid4().hex}",
        seq=4 if chained else None,
        hash=model.chain_hash if chained else None,
        id=model.id,
    )
    found = first_break(world, contact_id)
    if chained:
        assert found["seq"] == 4
    else:
        assert found["seq"] is None
        assert "outside the relay" in found["reason"]


def test_the_cli_names_the_first_broken_link_and_fails(world: EvidenceWorld) -> None:
    contact_id = person(world)
    second = world.events(contact_id=contact_id)[1]
    world.execute(
        "UPDATE events SET occurred_at_given = :no WHERE id = :id", no=False, id=second.id
    )
    code, out, _ = world.cli("ledger", "verify", "--contact-id", str(contact_id))
    assert code == 1
    assert f"contact {contact_id}: first broken link 2 (event {second.public_id})" in out
    code, out, _ = world.cli("ledger", "verify", "--json")
    assert code == 1
    everything = json.loads(out)
    assert contact_id in {found["contact_id"] for found in everything["broken"]}


def test_the_metric_reports_the_last_verification(world: EvidenceWorld) -> None:
    contact_id = person(world)
    world.execute(
        "UPDATE events SET consent_source = 'elsewhere' WHERE contact_id = :id", id=contact_id
    )
    everything = world.admin("POST", "/admin/ledger/verify", json={}).get_json()
    assert everything["ok"] is False
    text = world.metrics()
    assert (
        f"consent_relay_ledger_verify_last_broken_contacts {float(len(everything['broken']))}"
        in text
    )
    assert "consent_relay_ledger_verify_last_timestamp_seconds " in text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"contact_id": 0}, 422, "contact_id"),
        ({"contact_id": "1"}, 422, "contact_id"),
        ({"contact_id": 1, "email": "a@example.com"}, 422, "_schema"),
        ({"colour": "red"}, 422, "colour"),
        ({"email": "a\u0000b"}, 422, "email"),
        ({"contact_id": 9_000_000_000}, 404, None),
        ({"email": "nobody-at-all@example.com"}, 404, None),
    ],
)
def test_bad_verify_requests_are_precise_problems(
    world: EvidenceWorld, body: dict, status: int, field: str | None
) -> None:
    response = world.admin("POST", "/admin/ledger/verify", json=body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    if field:
        assert field in response.get_json()["errors"]


def test_a_non_json_verify_body_is_a_problem(world: EvidenceWorld) -> None:
    response = world.admin(
        "POST", "/admin/ledger/verify", data=b"{", content_type="application/json"
    )
    assert (response.status_code, response.mimetype) == (400, "application/problem+json")


def test_concurrent_decisions_for_one_contact_never_fork_the_chain(world: EvidenceWorld) -> None:
    email = f"race-{uuid.uuid4().hex[:10]}@example.com"
    import concurrent.futures

    def send(index: int) -> int:
        return world.send(email, ("granted", "denied")[index % 2]).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(send, range(12))) == {202}
    events = world.events(email=email)
    assert sorted(event.chain_seq for event in events) == list(range(1, 13))
    assert verify(world, events[0].contact_id)["ok"] is True
