"""Every operation of `/openapi.json`, with generated parameters and bodies (schemathesis),
through the real app on a SQLite ledger with the admin token: never a 5xx, and every answer
as the document says (status, content type, headers, body schema). Issue 9b."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import settings
from schemathesis import checks

from service.http.openapi import openapi_document
from tests.helpers.input_world import ADMIN_TOKEN, KindsWorld

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


# The document does not depend on the config (service/http/openapi.py), so it is loaded here;
# the app is passed per call (schemathesis' from_fixture does not work on pytest 9).
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def kinds_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindsWorld]:
    kinds_world = KindsWorld(tmp_path_factory.mktemp("openapi-fuzz"))
    served = kinds_world.client.get("/openapi.json").get_json()
    assert served == json.loads(json.dumps(openapi_document()))  # the one that is served
    yield kinds_world


@schema.parametrize()
@settings(max_examples=25)
def test_every_operation_answers_as_documented_and_never_a_5xx(
    kinds_world: KindsWorld, case: schemathesis.Case
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(headers=headers, checks=CHECKS, app=kinds_world.app)
