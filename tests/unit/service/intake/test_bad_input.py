"""Bad input is a 4xx naming the field, never a 500 or a false 503 (issue 5), on SQLite.

The same cases run on PostgreSQL, which refuses NUL and enforces column lengths, in
tests/integration/test_bad_input_pg.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, StatementError

from tests.helpers.input_world import (
    BAD_ADMIN_BODIES,
    BAD_ADMIN_QUERIES,
    VENDOR_CASES,
    KindsWorld,
    csrf,
    failure,
    fixture_with,
)


@pytest.fixture(scope="module")
def kinds_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindsWorld]:
    yield KindsWorld(tmp_path_factory.mktemp("bad-input"))


@pytest.mark.parametrize(("kind", "fixture", "path", "value", "status"), VENDOR_CASES)
def test_vendor_input_that_cannot_be_read_or_stored_is_a_4xx_naming_the_field(
    kinds_world: KindsWorld, kind: str, fixture: str, path: tuple, value: object, status: int
) -> None:
    body = fixture_with(kind, fixture, path, value)
    response = kinds_world.send(kind, body, "application/json")
    assert response.status_code == status, failure(response, kinds_world)
    if status == 422:
        assert response.get_json()["errors"].keys() & {"event_id", "event_type"}
    if status == 400:
        assert response.get_json()["type"].endswith(("malformed-json", "malformed-body"))


def test_a_wrong_type_names_its_json_path(kinds_world: KindsWorld) -> None:
    path = ("form_response", "definition", "fields", 0, "id")
    response = kinds_world.send(
        "typeform", fixture_with("typeform", "form_response", path, []), "application/json"
    )
    assert response.status_code == 400
    assert "form_response.definition.fields[0].id must be a string" in response.get_json()["detail"]


def test_an_ignore_reason_quoting_a_sender_value_is_stored_without_its_control_characters(
    kinds_world: KindsWorld,
) -> None:
    # No address in a Webhooks API event: the reason quotes the event's objectId as sent.
    events = json.loads(fixture_with("hubspot", "property_change", (0, "objectId"), "a\x00b"))
    events[0]["propertyName"] = "tracking_consent"
    response = kinds_world.send("hubspot", json.dumps(events).encode(), "application/json")
    assert response.status_code == 200, failure(response, kinds_world)
    reasons = [row.reason for row in kinds_world.ignored() if "a\ufffdb" in row.reason]
    assert reasons, [row.reason for row in kinds_world.ignored()]


@pytest.mark.parametrize(("url", "field"), BAD_ADMIN_QUERIES)
def test_admin_query_parameters_that_cannot_be_used_are_a_422_naming_them(
    kinds_world: KindsWorld, url: str, field: str
) -> None:
    response = kinds_world.admin("GET", url)
    assert response.status_code == 422, failure(response, kinds_world)
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]


@pytest.mark.parametrize(
    "url", ["/admin/dead-letters/99999999999999999999", "/admin/dead-letters/0"]
)
def test_a_dead_letter_id_beyond_the_ledger_is_not_found(kinds_world: KindsWorld, url: str) -> None:
    assert kinds_world.admin("GET", url).status_code == 404
    assert kinds_world.admin("POST", url + "/replay").status_code == 404


@pytest.mark.parametrize(("url", "body", "status", "field"), BAD_ADMIN_BODIES)
def test_admin_bodies_that_cannot_be_used_are_a_4xx_naming_the_field(
    kinds_world: KindsWorld, url: str, body: bytes, status: int, field: str | None
) -> None:
    response = kinds_world.admin("POST", url, data=body, content_type="application/json")
    assert response.status_code == status, failure(response, kinds_world)
    if field is not None:
        assert field in response.get_json()["errors"]


def test_an_operator_reason_may_be_any_printable_text(kinds_world: KindsWorld) -> None:
    body = '{"reason": "Wartung – Schlüssel erneuert 🔑 (ticket #42)"}'.encode()
    response = kinds_world.admin(
        "POST", "/admin/destinations/engage/pause", data=body, content_type="application/json"
    )
    assert response.status_code == 200, failure(response, kinds_world)
    assert kinds_world.admin("POST", "/admin/destinations/engage/resume").status_code == 200


@pytest.mark.parametrize(
    "url", ["/ops/dead-letters/99999999999999999999", "/ops/contacts/99999999999999999999"]
)
def test_the_operator_page_answers_ids_beyond_the_ledger_not_found(
    kinds_world: KindsWorld, url: str
) -> None:
    assert kinds_world.ops_client().get(url).status_code == 404


def test_the_operator_page_refuses_an_address_it_cannot_look_up(kinds_world: KindsWorld) -> None:
    client = kinds_world.ops_client()
    response = client.post("/ops/contacts", data={"email": "a\x00b", "csrf_token": csrf(client)})
    assert response.status_code == 400
    assert "control characters" in response.get_data(as_text=True)


def test_the_operator_page_does_not_pause_with_a_reason_holding_escapes(
    kinds_world: KindsWorld,
) -> None:
    client = kinds_world.ops_client()
    form = {"reason": "\x1b[31mred", "csrf_token": csrf(client)}
    response = client.post("/ops/destinations/engage/pause", data=form)
    assert response.status_code == 303
    listing = kinds_world.admin("GET", "/admin/destinations").get_json()["destinations"]
    assert not next(d for d in listing if d["name"] == "engage")["paused"]


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (DataError("INSERT", {}, Exception("value too long")), True),
        (StatementError("overflow", "INSERT", {}, OverflowError()), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), False),
    ],
)
def test_only_refused_values_are_told_apart_from_an_unavailable_ledger(
    error: Exception, refused: bool
) -> None:
    from relay.ledger.db import refused_values

    assert refused_values(error) is refused  # type: ignore[arg-type]
