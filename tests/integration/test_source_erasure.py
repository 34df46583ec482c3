"""A source's deletion event raises an erasure (issue 17, section 4), through the real app on
SQLite and PostgreSQL with HubSpot-signed requests: HubSpot `contact.privacyDeletion` erases the
contact whose decisions from THIS source carry the object's source_id, audited as
`source:<name>`; an unknown object, a source without the option and a source_id template without
`{object_id}` are ignored with their reason; a redelivery is a duplicate and erases nothing more."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.test import TestResponse

from relay.ledger.models import AuditEntry, Contact, Erasure, IgnoredEvent
from service.sources.fixtures import load_fixture
from tests.helpers.evidence_world import BASE_URL, EvidenceWorld

pytestmark = pytest.mark.integration
SECRET = "hubspot-secret-" + "h" * 32
HUBSPOT = f"""
[sources.crm]
kind = "hubspot"
secrets = ["{SECRET}"]
source = "hubspot:{{portal_id}}"
erase_on_privacy_deletion = true

[sources.crm.mapping]
consent = "tracking_consent"

[sources.crm-off]
kind = "hubspot"
secrets = ["{SECRET}"]
source = "hubspot:{{portal_id}}"

[sources.crm-off.mapping]
consent = "tracking_consent"

[sources.crm-portal]
kind = "hubspot"
secrets = ["{SECRET}"]
source = "hubspot:{{portal_id}}"
source_id = "portal-{{portal_id}}:{{change_id}}"
erase_on_privacy_deletion = true

[sources.crm-portal.mapping]
consent = "tracking_consent"
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield EvidenceWorld(
        tmp_path_factory.mktemp(f"src-erase-{request.param}"), engage, database, HUBSPOT
    )


def _post(world: EvidenceWorld, source: str, body: bytes) -> TestResponse:
    url = f"{BASE_URL}/webhooks/{source}"
    signed = world.runtime.kinds[source].sign(body, "application/json", url, time.time())
    return world.client.post(
        "/webhooks/" + source, data=signed.body, headers=dict(signed.headers), base_url=BASE_URL
    )


def _contact(world: EvidenceWorld, source: str, vid: int, email: str) -> int:
    """A workflow webhook (the golden fixture, another person) recorded as a decision."""
    payload: dict[str, Any] = json.loads(load_fixture("hubspot", "workflow_contact")[0])
    payload["vid"] = payload["canonical-vid"] = vid
    payload["properties"]["email"] = {"value": email, "versions": []}
    response = _post(world, source, json.dumps(payload).encode())
    assert response.status_code == 202, response.get_json()
    return int(world.events(source_name=source)[-1].contact_id)


def _deletion(object_id: int) -> tuple[bytes, int]:
    event = json.loads(load_fixture("hubspot", "privacy_deletion")[0])[0]
    event["objectId"] = object_id
    event["eventId"] = uuid.uuid4().int % 10**12
    return json.dumps([event]).encode(), event["eventId"]


def _erased_at(world: EvidenceWorld, contact_id: int) -> Any:
    with world.runtime.sessions() as session:
        return session.scalar(select(Contact.erased_at).where(Contact.id == contact_id))


def _ignored(world: EvidenceWorld, source: str, event_id: int) -> str | None:
    with world.runtime.sessions() as session:
        query = select(IgnoredEvent.reason).where(
            IgnoredEvent.source_name == source, IgnoredEvent.delivery_id == str(event_id)
        )
        return session.scalar(query)


def _vid() -> int:
    return 10**6 + uuid.uuid4().int % 10**9


def test_privacy_deletion_erases_the_objects_contact_audited_once(world: EvidenceWorld) -> None:
    vid = _vid()
    target = _contact(world, "crm", vid, f"gone-{vid}@example.com")
    bystander = _contact(world, "crm", vid * 10 + 1, f"stays-{vid}@example.com")
    body, event_id = _deletion(vid)
    answer = _post(world, "crm", body)
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["status"] == "erased"
    assert f"contact {target} erased" in answer.get_json()["reason"]
    assert _erased_at(world, target) is not None
    assert _erased_at(world, bystander) is None
    with world.runtime.sessions() as session:
        [row] = session.scalars(select(Erasure).where(Erasure.contact_id == target))
        assert row.requested_by == "source:crm"
        assert str(event_id) in row.reason
        audited = session.scalars(
            select(AuditEntry).where(
                AuditEntry.actor == "source:crm", AuditEntry.action == "erasure"
            )
        ).all()
        assert [entry.targets for entry in audited if f"contact {target}" in entry.targets]
    again = _post(world, "crm", body)
    assert again.status_code == 200
    assert again.get_json()["status"] == "duplicate"
    with world.runtime.sessions() as session:
        assert len(session.scalars(select(Erasure).where(Erasure.contact_id == target)).all()) == 1
    verified = world.admin("POST", "/admin/ledger/verify", json={"contact_id": target})
    assert verified.get_json()["ok"] is True, verified.get_json()
    assert verified.get_json()["audit"]["ok"] is True


def test_a_new_deletion_event_for_an_erased_object_erases_nothing_more(
    world: EvidenceWorld,
) -> None:
    vid = _vid()
    target = _contact(world, "crm", vid, f"twice-{vid}@example.com")
    assert _post(world, "crm", _deletion(vid)[0]).status_code == 202
    body, event_id = _deletion(vid)
    answer = _post(world, "crm", body)
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "ignored"
    assert "erased already" in (_ignored(world, "crm", event_id) or "")
    with world.runtime.sessions() as session:
        assert len(session.scalars(select(Erasure).where(Erasure.contact_id == target)).all()) == 1


def test_an_unknown_object_is_ignored_with_its_reason(world: EvidenceWorld) -> None:
    body, event_id = _deletion(_vid())
    answer = _post(world, "crm", body)
    assert answer.status_code == 200
    assert answer.get_json()["ignored"] is True
    assert "no decision of this source" in (_ignored(world, "crm", event_id) or "")


def test_only_this_sources_decisions_match(world: EvidenceWorld) -> None:
    vid = _vid()
    other = _contact(world, "crm-off", vid, f"other-source-{vid}@example.com")
    body, _ = _deletion(vid)
    assert _post(world, "crm", body).status_code == 200
    assert _erased_at(world, other) is None


def test_off_by_default_the_event_is_ignored_as_before(world: EvidenceWorld) -> None:
    vid = _vid()
    kept = _contact(world, "crm-off", vid, f"off-{vid}@example.com")
    body, event_id = _deletion(vid)
    answer = _post(world, "crm-off", body)
    assert answer.status_code == 200
    assert (
        _ignored(world, "crm-off", event_id)
        == "A contact.privacyDeletion event is not a consent decision."
    )
    assert _erased_at(world, kept) is None


def test_a_template_without_the_object_id_is_ignored_with_the_precise_reason(
    world: EvidenceWorld,
) -> None:
    vid = _vid()
    kept = _contact(world, "crm-portal", vid, f"portal-{vid}@example.com")
    body, event_id = _deletion(vid)
    assert _post(world, "crm-portal", body).status_code == 200
    reason = _ignored(world, "crm-portal", event_id) or ""
    assert "does not contain {object_id}" in reason and "portal-{portal_id}" in reason
    assert _erased_at(world, kept) is None
