"""Consent evidence, end to end through the real app on SQLite and PostgreSQL (issue 17,
section 1): a canonical payload's own evidence fields, a source's evidence constants, a form
source's evidence templates; stored in the ledger and shown on the operator page."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from relay.domain import Evidence
from service.sources.fixtures import load_fixture
from tests.helpers.evidence_world import EvidenceWorld

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield EvidenceWorld(tmp_path_factory.mktemp(f"evidence-{request.param}"), engage, database)


def test_a_canonical_payloads_evidence_is_stored_with_the_config_filling_the_rest(
    world: EvidenceWorld,
) -> None:
    response = world.send(
        "ev-canonical@example.com",
        "granted",
        notice_version="2026-05",
        notice_url="https://example.com/privacy?v=2026-05",
        purposes=["newsletter", "product-updates"],
        lawful_basis="consent",
        language="de-AT",
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    [event] = world.events(email="ev-canonical@example.com")
    assert event.evidence == Evidence(
        notice_version="2026-05",
        notice_url="https://example.com/privacy?v=2026-05",
        purposes=("newsletter", "product-updates"),
        collection_method="api",  # the source's constant
        lawful_basis="consent",
        jurisdiction="EU",  # the source's constant
        language="de-AT",
    )


def test_a_payload_without_evidence_is_still_valid(world: EvidenceWorld) -> None:
    assert world.send("ev-bare@example.com", "denied").status_code == 202
    [event] = world.events(email="ev-bare@example.com")
    assert event.evidence == Evidence(collection_method="api", jurisdiction="EU")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("collection_method", "telepathy"),
        ("lawful_basis", "whim"),
        ("notice_url", "javascript:alert(1)"),
        ("purposes", []),
        ("purposes", ["x" * 256]),
        ("language", "english please"),
        ("notice_version", "v\u00001"),
        ("jurisdiction", "j" * 65),
    ],
)
def test_bad_evidence_is_a_422_naming_the_field(
    world: EvidenceWorld, field: str, value: object
) -> None:
    response = world.send("ev-bad@example.com", "granted", **{field: value})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


def test_a_form_sources_evidence_templates_render_from_the_event(world: EvidenceWorld) -> None:
    response = world.send_typeform()
    assert response.status_code == 202, response.get_data(as_text=True)
    [event] = world.events(source_name="forms")
    assert event.evidence == Evidence(
        notice_version="form-lT4Z3j",
        notice_url="https://example.com/privacy/lT4Z3j",
        purposes=("newsletter",),
        collection_method="form",
        lawful_basis="consent",
        language="en",
    )
    body, _ = load_fixture("typeform", "form_response")
    assert event.body_sha256 == hashlib.sha256(body).hexdigest()  # the payload as received


def test_the_operator_page_shows_the_evidence(world: EvidenceWorld) -> None:
    [event] = world.events(source_name="forms")
    page = world.ops_client().get(f"/ops/contacts/{event.contact_id}").get_data(as_text=True)
    assert 'data-field="notice_version">form-lT4Z3j<' in page
    assert 'href="https://example.com/privacy/lT4Z3j"' in page
    assert 'data-field="purposes">newsletter<' in page
    assert 'data-field="collection_method">form<' in page
    assert 'data-field="lawful_basis">consent<' in page
    assert 'data-field="language">en<' in page
    assert f"sha256:{event.body_sha256}" in page
