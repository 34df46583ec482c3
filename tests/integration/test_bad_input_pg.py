"""Bad input on a PostgreSQL ledger, which refuses NUL in text and enforces column lengths
(SQLite does neither): a 4xx naming the field, never a 500 or a false 503 (issues 5, 9a).
And the 503 that stays: a ledger that is really unreachable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from tests.helpers.input_world import (
    BAD_ADMIN_BODIES,
    BAD_ADMIN_QUERIES,
    SOURCES,
    VENDOR_CASES,
    KindsWorld,
    failure,
    fixture_with,
    mutated_bodies,
)

pytestmark = pytest.mark.integration
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def kinds_world(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KindsWorld]:
    yield KindsWorld(tmp_path_factory.mktemp("bad-input-pg"), postgres_url)


@pytest.mark.parametrize(("kind", "fixture", "path", "value", "status"), VENDOR_CASES)
def test_vendor_input_the_ledger_cannot_store_is_a_4xx(
    kinds_world: KindsWorld, kind: str, fixture: str, path: tuple, value: object, status: int
) -> None:
    response = kinds_world.send(kind, fixture_with(kind, fixture, path, value), "application/json")
    assert response.status_code == status, failure(response, kinds_world)


@pytest.mark.parametrize(("url", "field"), BAD_ADMIN_QUERIES)
def test_admin_query_parameters_the_ledger_cannot_use_are_a_422(
    kinds_world: KindsWorld, url: str, field: str
) -> None:
    response = kinds_world.admin("GET", url)
    assert response.status_code == 422, failure(response, kinds_world)
    assert field in response.get_json()["errors"]


@pytest.mark.parametrize(("url", "body", "status", "field"), BAD_ADMIN_BODIES)
def test_admin_bodies_the_ledger_cannot_use_are_a_4xx(
    kinds_world: KindsWorld, url: str, body: bytes, status: int, field: str | None
) -> None:
    response = kinds_world.admin("POST", url, data=body, content_type="application/json")
    assert response.status_code == status, failure(response, kinds_world)


@pytest.mark.parametrize("url", ["/ops/dead-letters/99999999999999999999"])
def test_the_operator_page_answers_ids_beyond_bigint_not_found(
    kinds_world: KindsWorld, url: str
) -> None:
    assert kinds_world.ops_client().get(url).status_code == 404
    assert kinds_world.admin("GET", url.replace("/ops/", "/admin/")).status_code == 404


@pytest.mark.parametrize("kind", sorted(SOURCES))
@given(data=st.data())
def test_any_value_anywhere_is_never_a_server_error_on_postgresql(
    kinds_world: KindsWorld, kind: str, data: st.DataObject
) -> None:
    body, content_type = data.draw(mutated_bodies(kind))
    response = kinds_world.send(kind, body, content_type)
    assert response.status_code < 500, failure(response, kinds_world)


def test_an_unreachable_ledger_is_still_a_503(tmp_path: Path) -> None:
    name = f"consent_relay_gone_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        kinds_world = KindsWorld(tmp_path, f"postgresql://postgres@127.0.0.1:5432/{name}")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        body = fixture_with("typeform", "form_response", ("event_id",), "still-valid")
        response = kinds_world.send("typeform", body, "application/json")
        assert response.status_code == 503, failure(response, kinds_world)
        assert response.headers["Retry-After"]
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
