"""The operator page's Retry and Acknowledge of a failed erasure at a destination
(docs/data-protection.md#failed-at-destination), through the Flask test client: the erasure is
made by relay/ledger/erasure.py with a forwarding, the row failed by the worker's own
`settle`, and the buttons run relay/ledger/erasure_failures.py, audited as the operator."""

from __future__ import annotations

import uuid

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from relay.ledger import audit, destination_erasures, erasure
from relay.ledger.models import DestinationErasure, utcnow
from tests.helpers.ledger_rows import record
from tests.helpers.ops_world import Ops

KEY = Fernet.generate_key().decode()
# engage seals the address; engage_eu names the person by a source id the decision lacks, so
# its row fails at capture, without a seal (as a MoEngage customer_id template would)
FORWARD = destination_erasures.Forwarding(
    KEY, (("engage", "{email}"), ("engage_eu", "{source_id}"))
)


@pytest.fixture
def signed_in(ops: Ops) -> Ops:
    assert ops.login().status_code == 303
    return ops


def failed_erasure(ops: Ops) -> tuple[int, str]:
    """A contact erased with both rows failed: (contact id, erasure id)."""
    with ops.sessions() as session:
        contact_id = record(session, f"gone-{uuid.uuid4().hex[:6]}@example.com", "granted")
        result = erasure.erase_contact(
            session,
            erasure.ErasureRequest(contact_id, "DPO ticket 1", "Art. 17"),
            pseudonym_key=None,
            lease_seconds=30,
            forward=FORWARD,
        )
        assert result is not None and [name for _, name in result.forwarded] == ["engage"]
        [(row_id, _)] = result.forwarded
        destination_erasures.settle(
            session,
            row_id,
            status="failed",
            attempts=1,
            http_status=400,
            detail="refused",
            now=utcnow(),
        )
        session.commit()
    return contact_id, result.erasure_id


def row(ops: Ops, destination: str) -> DestinationErasure:
    with ops.sessions() as session:
        found = session.scalars(select(DestinationErasure).filter_by(destination=destination))
        return found.one()


def actions(ops: Ops) -> list[tuple[str, str, str]]:
    with ops.sessions() as session:
        return [(e.action, e.actor_kind, e.outcome) for e in audit.recent(session, 10)]


def test_a_failed_row_shows_retry_and_acknowledge(signed_in: Ops) -> None:
    contact_id, erasure_id = failed_erasure(signed_in)
    page = signed_in.page(f"/ops/contacts/{contact_id}")
    base = f"/ops/erasures/{erasure_id}/destinations"
    assert "engage: failed (refused)" in page
    assert f'action="{base}/engage/retry"' in page
    assert f'action="{base}/engage/acknowledge"' in page
    assert "engage_eu: failed (the identifier template needs source_id" in page


def test_retry_puts_the_row_back_to_pending_enqueues_and_audits(signed_in: Ops) -> None:
    contact_id, erasure_id = failed_erasure(signed_in)
    response = signed_in.post(f"/ops/erasures/{erasure_id}/destinations/engage/retry")
    assert response.headers["Location"] == f"/ops/contacts/{contact_id}"
    page = signed_in.follow(response)
    assert "The erasure at engage is pending again" in page and "engage: pending" in page
    kept = row(signed_in, "engage")
    assert kept.status == "pending" and kept.sealed_address is not None
    assert signed_in.publisher.erasures == [(kept.id, "engage")]
    assert actions(signed_in)[0] == ("erasure-retry", "operator", "pending again: refused")


def test_a_row_without_a_seal_cannot_be_retried(signed_in: Ops) -> None:
    _contact_id, erasure_id = failed_erasure(signed_in)
    page = signed_in.follow(
        signed_in.post(f"/ops/erasures/{erasure_id}/destinations/engage_eu/retry")
    )
    assert "Not retried: Nothing is sealed for it: acknowledge it instead." in page
    assert row(signed_in, "engage_eu").status == "failed"
    assert signed_in.publisher.erasures == []
    assert [a for a, _, _ in actions(signed_in)] == []


def test_acknowledge_needs_a_note_and_wipes_the_seal(signed_in: Ops) -> None:
    _contact_id, erasure_id = failed_erasure(signed_in)
    path = f"/ops/erasures/{erasure_id}/destinations/engage/acknowledge"
    page = signed_in.follow(signed_in.post(path, note="  "))
    assert "Not acknowledged: write a note" in page
    assert row(signed_in, "engage").sealed_address is not None
    page = signed_in.follow(signed_in.post(path, note="T-9: deleted by hand"))
    assert "is acknowledged: its sealed identifier is wiped" in page
    assert "engage: acknowledged" in page
    gone = row(signed_in, "engage")
    assert gone.status == "acknowledged" and gone.sealed_address is None
    assert actions(signed_in)[0] == (
        "erasure-acknowledge",
        "operator",
        "acknowledged: T-9: deleted by hand",
    )
    page = signed_in.follow(signed_in.post(path, note="again"))
    assert "Not acknowledged: It is acknowledged; only a failed one can be handled." in page


def test_unknown_erasures_and_missing_tokens_change_nothing(signed_in: Ops) -> None:
    _contact_id, erasure_id = failed_erasure(signed_in)
    unknown = signed_in.post(f"/ops/erasures/{uuid.uuid4()}/destinations/engage/retry")
    assert unknown.status_code == 404
    path = f"/ops/erasures/{erasure_id}/destinations/engage/acknowledge"
    forged = signed_in.client.post(path, data={"note": "T-9", "csrf_token": "forged"})
    assert forged.status_code == 400
    assert row(signed_in, "engage").status == "failed"


def test_the_buttons_need_a_sign_in(ops: Ops) -> None:
    _contact_id, erasure_id = failed_erasure(ops)
    ops.client.get("/ops/login")
    path = f"/ops/erasures/{erasure_id}/destinations/engage/retry"
    response = ops.client.post(path, data={"csrf_token": ops.csrf()})
    assert response.status_code == 302 and response.headers["Location"] == "/ops/login"
    assert row(ops, "engage").status == "failed"
