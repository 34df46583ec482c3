"""The OpenAPI document (`GET /openapi.json`) against the real app: it is valid OpenAPI 3.1,
every route is in it, and every documented answer (operation and status) is produced here
through the Flask test client and its body and headers validated against the document."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.ledger import pauses as destinations
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import DestinationErasure, Erasure, utcnow
from schemas.config import decode_whsec
from service import create_app
from service.http.openapi import openapi_document
from service.sources.standard_webhooks import sign
from tests.helpers.ledger_rows import T0, dead_letter, record

SPEC = openapi_document()
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "adm-" + "a1b2c3d4" * 5
DOCUMENTED_PREFIXES = ("/webhooks", "/admin", "/healthz", "/readyz", "/openapi.json")
JANE = "Jane.Doe@Example.com"


def config_text(data_dir: Path, tokens: list[str]) -> str:
    quoted = ", ".join(f'"{token}"' for token in tokens)
    return f"""
[service]
data_dir = "{data_dir}"
max_body_bytes = 1024

[admin]
tokens = [{quoted}]

[destinations.engage]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8025"
username = "api-user@example.com"
password = "engage-demo-password"

[sources.signup]
kind = "standard-webhooks"
secrets = ["{SECRET}"]
source = "registration_form"
"""


@dataclass
class Api:
    tmp_path: Path
    app: Flask
    client: FlaskClient
    sessions: sessionmaker[Session]

    def webhook(
        self, body: bytes, *, msg_id: str | None = None, source: str = "signup", **headers: str
    ) -> TestResponse:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        timestamp = int(utcnow().timestamp())
        signed = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(decode_whsec(SECRET), msg_id, timestamp, body),
        }
        return self.client.post(f"/webhooks/{source}", data=body, headers=signed | headers)

    def admin(self, method: str, path: str, token: str | None = TOKEN, **kw: Any) -> TestResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.open(path, method=method, headers=headers, **kw)

    def dead_letter(self) -> int:
        with self.sessions() as session:
            return dead_letter(session, "engage", record(session, JANE, "granted"), T0)

    def pause(self, name: str = "engage") -> None:
        with self.sessions() as session:
            destinations.pause(
                session, name, by="auth", reason="403", status=403, now=utcnow(), probe_in=None
            )
            session.commit()

    def break_ledger(self) -> None:
        """Point the app at a ledger path that is a directory: SQLite cannot open it."""
        (self.tmp_path / "not-a-database").mkdir()
        url = f"sqlite:///{self.tmp_path / 'not-a-database'}"
        self.app.extensions["consent_relay"].sessions = make_session_factory(make_engine(url))


def build(tmp_path: Path, tokens: list[str]) -> Api:
    path = tmp_path / "consent-relay.toml"
    path.write_text(config_text(tmp_path / "data", tokens))
    settings = load_settings(path, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    sessions = make_session_factory(make_engine(settings.database_url))
    return Api(tmp_path, app, app.test_client(), sessions)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    built = build(tmp_path, [TOKEN])
    yield built
    built.app.extensions["consent_relay"].engine.dispose()


def decision(**fields: Any) -> bytes:
    return json.dumps({"email": JANE, "tracking_consent": "granted", **fields}).encode()


def duplicate(api: Api) -> TestResponse:
    assert api.webhook(decision(), msg_id="msg_twice").status_code == 202
    return api.webhook(decision(), msg_id="msg_twice")


Call = Callable[[Api], TestResponse]


def after(setup: Callable[[Api], object], call: Call) -> Call:
    """`call`, once `setup` has put the app in the state the answer needs."""

    def run(api: Api) -> TestResponse:
        setup(api)
        return call(api)

    return run


def broken(call: Call) -> Call:
    return after(Api.break_ledger, call)


def paused(call: Call) -> Call:
    return after(Api.pause, call)


def with_dead_letter(call: Call) -> Call:
    return after(Api.dead_letter, call)


def disabled(method: str, path: str) -> Call:
    def run(api: Api) -> TestResponse:
        (api.tmp_path / "no-tokens").mkdir()
        return build(api.tmp_path / "no-tokens", []).admin(method, path)

    return run


def on_dead_letter(method: str, template: str) -> Call:
    return lambda api: api.admin(method, template.format(id=api.dead_letter()))


def admin(method: str, path: str, **kw: Any) -> Call:
    return lambda api: api.admin(method, path, **kw)


WEBHOOK = "/webhooks/{source_name}"
DL, DL_ONE, DL_REPLAY = (
    "/admin/dead-letters",
    "/admin/dead-letters/{dead_letter_id}",
    "/admin/dead-letters/{dead_letter_id}/replay",
)
DL_MANY, DESTS = "/admin/dead-letters/replay", "/admin/destinations"
PAUSE, RESUME = "/admin/destinations/{name}/pause", "/admin/destinations/{name}/resume"
ENGAGE_PAUSE, ENGAGE_RESUME = (
    "/admin/destinations/engage/pause",
    "/admin/destinations/engage/resume",
)
VERIFY, EXPORT = "/admin/ledger/verify", "/admin/contacts/{contact_id}/export"
ERASE, ERASE_ONE = "/admin/contacts/{contact_id}/erase", "/admin/contacts/1/erase"
AUDIT = "/admin/audit"
AGAIN = "/admin/ignored/reprocess"
WHO = {"json": {"requested_by": "ticket 1", "reason": "Art. 17"}}


def erased_twice(api: Api) -> TestResponse:
    api.dead_letter()
    assert api.admin("POST", ERASE_ONE, **WHO).status_code == 200
    return api.admin("POST", ERASE_ONE, **WHO)


FAILED_AT = "/admin/erasures/{erasure_id}/destinations/{destination}"
RETRY, ACK = FAILED_AT + "/retry", FAILED_AT + "/acknowledge"
NOBODY = "/admin/erasures/00000000-0000-4000-8000-000000000000/destinations/engage"
NOTE = {"json": {"note": "ticket 2"}}


def on_failed_erasure(action: str, **kw: Any) -> Call:
    """An erasure whose delete call at engage failed, as the worker leaves it (set up here:
    this app has no worker), then the call."""

    def run(api: Api) -> TestResponse:
        api.dead_letter()
        erasure_id = api.admin("POST", ERASE_ONE, **WHO).get_json()["erasure_id"]
        with api.sessions() as session:
            row = session.scalars(select(Erasure).where(Erasure.public_id == erasure_id)).one()
            failed = DestinationErasure(
                erasure_id=row.id,
                destination="engage",
                status="failed",
                attempts=1,
                sealed_address="sealed",
                created_at=T0,
                finished_at=T0,
                detail="rejected: 400",
            )
            session.add(failed)
            session.commit()
        return api.admin("POST", f"/admin/erasures/{erasure_id}/destinations/engage/{action}", **kw)

    return run


def _last_erasure(api: Api) -> str:
    exported = api.admin("GET", "/admin/contacts/1/export").get_json()
    return str(exported["erasures"][0]["erasure_id"])


def acknowledged_twice(api: Api) -> TestResponse:
    assert on_failed_erasure("acknowledge", **NOTE)(api).status_code == 200
    erasure_id = _last_erasure(api)
    return api.admin("POST", f"/admin/erasures/{erasure_id}/destinations/engage/retry")


def retried_then_acknowledged(api: Api) -> TestResponse:
    assert on_failed_erasure("retry")(api).status_code == 200  # pending now: not failed
    path = f"/admin/erasures/{_last_erasure(api)}/destinations/engage/acknowledge"
    return api.admin("POST", path, **NOTE)


REPLAY_BODY = {"json": {"ids": [1]}}
BAD_JSON = {"data": "{", "content_type": "application/json"}
# (method, documented path, status, how to get that answer from the app)
CASES: list[tuple[str, str, int, Call]] = [
    ("post", WEBHOOK, 202, lambda api: api.webhook(decision(occurred_at=T0.isoformat()))),
    ("post", WEBHOOK, 200, duplicate),
    ("post", WEBHOOK, 400, lambda api: api.webhook(b'{"email": ')),
    ("post", WEBHOOK, 401, lambda api: api.webhook(decision(), **{"webhook-signature": "v1,x"})),
    ("post", WEBHOOK, 404, lambda api: api.webhook(decision(), source="nowhere")),
    ("post", WEBHOOK, 413, lambda api: api.webhook(b" " * 2048)),
    ("post", WEBHOOK, 415, lambda api: api.webhook(decision(), **{"content-type": "text/plain"})),
    ("post", WEBHOOK, 422, lambda api: api.webhook(decision(email="nope", colour="red"))),
    ("post", WEBHOOK, 503, broken(lambda api: api.webhook(decision()))),
    ("get", "/healthz", 200, lambda api: api.client.get("/healthz")),
    ("get", "/readyz", 200, lambda api: api.client.get("/readyz")),
    ("get", "/readyz", 503, paused(lambda api: api.client.get("/readyz"))),
    ("get", "/openapi.json", 200, lambda api: api.client.get("/openapi.json")),
    ("get", DL, 200, with_dead_letter(admin("GET", DL))),
    ("get", DL, 401, admin("GET", DL, token=None)),
    ("get", DL, 403, disabled("GET", DL)),
    ("get", DL, 422, admin("GET", DL + "?status=lost&limit=0")),
    ("get", DL, 503, broken(admin("GET", DL))),
    ("get", DL_ONE, 200, on_dead_letter("GET", "/admin/dead-letters/{id}")),
    ("get", DL_ONE, 401, admin("GET", "/admin/dead-letters/1", token="wrong-" * 6)),
    ("get", DL_ONE, 403, disabled("GET", "/admin/dead-letters/1")),
    ("get", DL_ONE, 404, admin("GET", "/admin/dead-letters/999")),
    ("get", DL_ONE, 503, broken(admin("GET", "/admin/dead-letters/1"))),
    ("post", DL_REPLAY, 200, on_dead_letter("POST", "/admin/dead-letters/{id}/replay")),
    ("post", DL_REPLAY, 401, admin("POST", "/admin/dead-letters/1/replay", token=None)),
    ("post", DL_REPLAY, 403, disabled("POST", "/admin/dead-letters/1/replay")),
    ("post", DL_REPLAY, 404, admin("POST", "/admin/dead-letters/999/replay")),
    ("post", DL_REPLAY, 503, broken(admin("POST", "/admin/dead-letters/1/replay"))),
    ("post", DL_MANY, 200, with_dead_letter(admin("POST", DL_MANY, json={"all": True}))),
    ("post", DL_MANY, 400, admin("POST", DL_MANY, **BAD_JSON)),
    ("post", DL_MANY, 401, admin("POST", DL_MANY, token=None, **REPLAY_BODY)),
    ("post", DL_MANY, 403, disabled("POST", DL_MANY)),
    ("post", DL_MANY, 415, admin("POST", DL_MANY, data={"all": "true"})),
    ("post", DL_MANY, 422, admin("POST", DL_MANY, json={"ids": [1], "all": True})),
    ("post", DL_MANY, 503, broken(admin("POST", DL_MANY, **REPLAY_BODY))),
    ("get", DESTS, 200, paused(admin("GET", DESTS))),
    ("get", DESTS, 401, admin("GET", DESTS, token=None)),
    ("get", DESTS, 403, disabled("GET", DESTS)),
    ("get", DESTS, 503, broken(admin("GET", DESTS))),
    ("post", PAUSE, 200, admin("POST", ENGAGE_PAUSE, json={"reason": "maintenance"})),
    ("post", PAUSE, 400, admin("POST", ENGAGE_PAUSE, **BAD_JSON)),
    ("post", PAUSE, 401, admin("POST", ENGAGE_PAUSE, token=None)),
    ("post", PAUSE, 403, disabled("POST", ENGAGE_PAUSE)),
    ("post", PAUSE, 404, admin("POST", "/admin/destinations/nowhere/pause")),
    ("post", PAUSE, 415, admin("POST", ENGAGE_PAUSE, data={"reason": "x"})),
    ("post", PAUSE, 422, admin("POST", ENGAGE_PAUSE, json={"reason": ""})),
    ("post", PAUSE, 503, broken(admin("POST", ENGAGE_PAUSE))),
    ("post", RESUME, 200, paused(admin("POST", ENGAGE_RESUME))),
    ("post", RESUME, 401, admin("POST", ENGAGE_RESUME, token=None)),
    ("post", RESUME, 403, disabled("POST", ENGAGE_RESUME)),
    ("post", RESUME, 404, admin("POST", "/admin/destinations/nowhere/resume")),
    ("post", RESUME, 503, broken(admin("POST", ENGAGE_RESUME))),
    ("post", VERIFY, 200, admin("POST", VERIFY)),
    ("post", VERIFY, 400, admin("POST", VERIFY, **BAD_JSON)),
    ("post", VERIFY, 401, admin("POST", VERIFY, token=None)),
    ("post", VERIFY, 403, disabled("POST", VERIFY)),
    ("post", VERIFY, 404, admin("POST", VERIFY, json={"contact_id": 999})),
    ("post", VERIFY, 415, admin("POST", VERIFY, data={"contact_id": "1"})),
    ("post", VERIFY, 422, admin("POST", VERIFY, json={"contact_id": -1})),
    ("post", VERIFY, 503, broken(admin("POST", VERIFY))),
    ("get", EXPORT, 200, with_dead_letter(admin("GET", "/admin/contacts/1/export"))),
    ("get", EXPORT, 401, admin("GET", "/admin/contacts/1/export", token=None)),
    ("get", EXPORT, 403, disabled("GET", "/admin/contacts/1/export")),
    ("get", EXPORT, 404, admin("GET", "/admin/contacts/999/export")),
    ("get", EXPORT, 422, admin("GET", "/admin/contacts/1/export?format=xml")),
    ("get", EXPORT, 503, broken(admin("GET", "/admin/contacts/1/export"))),
    ("post", ERASE, 200, with_dead_letter(admin("POST", ERASE_ONE, **WHO))),
    ("post", ERASE, 400, admin("POST", ERASE_ONE, **BAD_JSON)),
    ("post", ERASE, 401, admin("POST", ERASE_ONE, token=None, **WHO)),
    ("post", ERASE, 403, disabled("POST", ERASE_ONE)),
    ("post", ERASE, 404, admin("POST", "/admin/contacts/999/erase", **WHO)),
    ("post", ERASE, 409, erased_twice),
    ("post", ERASE, 415, admin("POST", ERASE_ONE, data={"reason": "x"})),
    ("post", ERASE, 422, admin("POST", ERASE_ONE, json={"reason": "x"})),
    ("post", ERASE, 503, broken(admin("POST", ERASE_ONE, **WHO))),
    ("get", AUDIT, 200, paused(admin("GET", AUDIT))),
    ("get", AUDIT, 401, admin("GET", AUDIT, token=None)),
    ("get", AUDIT, 403, disabled("GET", AUDIT)),
    ("get", AUDIT, 422, admin("GET", AUDIT + "?limit=0")),
    ("get", AUDIT, 503, broken(admin("GET", AUDIT))),
    ("post", AGAIN, 200, admin("POST", AGAIN)),
    ("post", AGAIN, 400, admin("POST", AGAIN, **BAD_JSON)),
    ("post", AGAIN, 401, admin("POST", AGAIN, token=None)),
    ("post", AGAIN, 403, disabled("POST", AGAIN)),
    ("post", AGAIN, 404, admin("POST", AGAIN, json={"source": "nowhere"})),
    ("post", AGAIN, 415, admin("POST", AGAIN, data={"source": "x"})),
    ("post", AGAIN, 422, admin("POST", AGAIN, json={"colour": "red"})),
    ("post", AGAIN, 503, broken(admin("POST", AGAIN))),
    ("post", RETRY, 200, on_failed_erasure("retry")),
    ("post", RETRY, 401, admin("POST", NOBODY + "/retry", token=None)),
    ("post", RETRY, 403, disabled("POST", NOBODY + "/retry")),
    ("post", RETRY, 404, admin("POST", NOBODY + "/retry")),
    ("post", RETRY, 409, acknowledged_twice),
    ("post", RETRY, 503, broken(admin("POST", NOBODY + "/retry"))),
    ("post", ACK, 200, on_failed_erasure("acknowledge", **NOTE)),
    ("post", ACK, 400, admin("POST", NOBODY + "/acknowledge", **BAD_JSON)),
    ("post", ACK, 401, admin("POST", NOBODY + "/acknowledge", token=None, **NOTE)),
    ("post", ACK, 403, disabled("POST", NOBODY + "/acknowledge")),
    ("post", ACK, 404, admin("POST", NOBODY + "/acknowledge", **NOTE)),
    ("post", ACK, 409, retried_then_acknowledged),
    ("post", ACK, 415, admin("POST", NOBODY + "/acknowledge", data={"note": "x"})),
    ("post", ACK, 422, admin("POST", NOBODY + "/acknowledge", json={"note": ""})),
    ("post", ACK, 503, broken(admin("POST", NOBODY + "/acknowledge", **NOTE))),
]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/components/...`) to the object it names."""
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check_body(body: Any, schema: dict[str, Any]) -> None:
    """Validate against a schema of the document, its `#/components/...` refs included."""
    rooted = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    rooted["components"] = SPEC["components"]
    validator = Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, errors


def test_the_document_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"] == "3.1.0"
    validate_openapi(SPEC)


@pytest.mark.parametrize(
    ("method", "path", "status", "call"), CASES, ids=[f"{m} {p} {s}" for m, p, s, _ in CASES]
)
def test_real_answers_match_the_document(
    api: Api, method: str, path: str, status: int, call: Call
) -> None:
    response = call(api)
    assert response.status_code == status, response.get_data(as_text=True)
    documented = resolve(SPEC["paths"][path][method]["responses"][str(status)])
    content = documented["content"]
    assert response.mimetype in content, (response.mimetype, list(content))
    if response.mimetype == "application/problem+json":
        assert response.get_json(force=True)["status"] == status
    check_body(response.get_json(force=True), content[response.mimetype]["schema"])
    for name, header in documented.get("headers", {}).items():
        if resolve(header).get("required"):
            assert name in response.headers, name


def test_every_documented_answer_is_checked_against_the_app() -> None:
    documented = {
        (method, path, int(status))
        for path, operations in SPEC["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }
    assert documented == {(method, path, status) for method, path, status, _ in CASES}


def test_every_route_is_documented_and_nothing_else(api: Api) -> None:
    routes = set()
    for rule in api.app.url_map.iter_rules():
        if rule.rule.startswith(DOCUMENTED_PREFIXES):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes |= {
                (path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")
            }
    documented = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert routes == documented


def test_the_document_is_served_without_auth(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == SPEC


def test_the_intake_documents_the_real_request_schema_and_signature_headers() -> None:
    operation = SPEC["paths"][WEBHOOK]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ConsentDecision"}
    decision_schema = SPEC["components"]["schemas"]["ConsentDecision"]
    assert decision_schema["required"] == ["email", "tracking_consent"]
    assert decision_schema["additionalProperties"] is False
    headers = {resolve(p)["name"] for p in operation["parameters"] if resolve(p)["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    admin_ops = [
        op
        for path, ops in SPEC["paths"].items()
        if path.startswith("/admin")
        for op in ops.values()
    ]
    assert all(op["security"] == [{"adminToken": []}] for op in admin_ops)
    assert SPEC["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
