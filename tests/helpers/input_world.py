"""Generated bad input for every source kind, signed by the kind itself (issue 9a).

`KindsWorld` is one relay with one source of each kind (named after the kind), on SQLite in
a tmp folder or on a PostgreSQL database; `send` signs a body with the kind's own `sign`, as
the real sender would. `mutated_bodies(kind)` is a hypothesis strategy: the kind's golden
fixture with a few of its values (at any depth) replaced by any JSON value, including the
inputs that cannot be stored or even read (NUL, lone surrogates, 5000-digit integers, deep
nesting, long strings, wrong types).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import strategies as st
from sqlalchemy import select
from urllib3 import encode_multipart_formdata
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import IgnoredEvent
from service import create_app
from service.sources import SourceKind
from service.sources.fixtures import fixture_names, fixture_path, load_fixture

BASE_URL = "http://relay.example.com"
ADMIN_TOKEN = "adm-" + "a1b2c3d4" * 5
OPS_PASSWORD = "correct-horse-battery-staple"
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# One source per kind, configured like the kinds' own tests (tests/unit/service/sources/test_*.py).
SOURCES = {
    "standard-webhooks": f'secrets = ["{STD_SECRET}"]\nsource = "signup"\n',
    "token": 'secrets = ["token-kind-secret-0123456789abcdefghij"]\nsource = "crm_flow"\n',
    "typeform": 'secrets = ["typeform-webhook-secret"]\nsource = "typeform:{form_id}"\n'
    'mapping = { email = "readable_ref_email", consent = "readable_ref_legal" }\n',
    "tally": 'secrets = ["tally-webhook-secret"]\nsource = "tally:{form_id}"\n'
    'mapping = { consent = "Marketing consent", when_missing = "unknown" }\n',
    "webflow": 'secrets = ["webflow-oauth-client-secret"]\nsource = "webflow:{form_name}"\n'
    'mapping = { consent = "Newsletter opt-in" }\n',
    "jotform": 'secrets = ["jotform-url-token-0123456789abcdefghij"]\n'
    'source = "jotform:{form_title}"\nmapping = { email = "email", consent = "consent" }\n',
    "hubspot": 'secrets = ["hubspot-client-secret-0000"]\nsource = "hubspot:{portal_id}"\n'
    'mapping = { consent = "tracking_consent" }\n',
    "salesforce": 'secrets = ["sf-outbound-token-0123456789abcdefghijklmnop"]\n'
    'organization_ids = ["00D7F00000107Xs"]\nsource = "salesforce:{object_type}"\n'
    'mapping = { consent = "Tracking_Consent__c" }\n',
    "pipedrive": 'secrets = ["pipedrive-basic-password-1"]\nusername = "pipedrive-hook"\n'
    'source = "pipedrive:{company_id}"\n'
    'mapping = { consent = "marketing_status", values = { subscribed = "granted" } }\n',
    "dynamics": 'secrets = ["dataverse-webhook-key-0123456789abcdef"]\n'
    'source = "dynamics:{organization_name}"\n'
    'mapping = { consent = "donotbulkemail", values = { "true" = "withdrawn" } }\n',
    "hmac": 'secrets = ["hmac-shared-secret"]\nsource = "signup:{event_type}"\n'
    'hmac = { preset = "github" }\nmapping = { email = "email", consent = "consent" }\n',
}
CANONICAL = {
    "email": "jane@example.com",
    "tracking_consent": "granted",
    "source": "form",
    "source_id": "f-1",
    "occurred_at": "2024-05-01T09:30:00Z",
}
# Stand-ins that json.dumps cannot write: replaced in the encoded text.
BIG_INT = "\x00big-int\x00"
DEEP = "\x00deep\x00"
RAW = {json.dumps(BIG_INT): "9" * 5000, json.dumps(DEEP): "[" * 3000 + "]" * 3000}
NASTY = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\x1b[31m",
    "\x7f\x85",
    "a" * 300,
    "é" * 300,
    "/Date(" + "9" * 5000 + ")/",
    "/Date(-99999999999999)/",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "99999999999999999999",
    "jane@example.com",
    "granted",
    BIG_INT,
    DEEP,
]
texts = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("\x00\ud800\udc00\x1b\x7fa@.é "), max_size=40),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)


def encode(value: Any) -> bytes:
    text = json.dumps(value)  # ASCII: a lone surrogate is written as its \\ud800 escape
    for stand_in, raw in RAW.items():
        text = text.replace(stand_in, raw)
    return text.encode()


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document, containers included (the root is not)."""
    found: list[tuple[Any, ...]] = []
    if not isinstance(value, dict | list):
        return found
    for key, child in value.items() if isinstance(value, dict) else enumerate(value):
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[head] = replaced(document[head], rest, new)
    return copy


@st.composite
def mutated_json(draw: st.DrawFn, document: Any) -> Any:
    candidates = paths(document)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(candidates))
        document = replaced(document, path, draw(json_values))
        candidates = paths(document) or candidates
    return document


def fixtures(kind: str) -> list[str]:
    return fixture_names(kind) or ["canonical"]


def _document(kind: str, name: str) -> Any:
    if name == "canonical":
        return CANONICAL
    if kind == "jotform":
        return json.loads(json.loads(fixture_path(kind, name).read_text())["rawRequest"])
    return json.loads(load_fixture(kind, name)[0])


@st.composite
def mutated_bodies(draw: st.DrawFn, kind: str) -> tuple[bytes, str]:
    """(body, content type): the kind's fixture with some values replaced."""
    name = draw(st.sampled_from(fixtures(kind)))
    if kind == "salesforce":
        return _mutated_xml(draw, name), "text/xml; charset=utf-8"
    document = draw(mutated_json(_document(kind, name)))
    if kind == "jotform":
        form = json.loads(fixture_path(kind, name).read_text())
        form["rawRequest"] = encode(document).decode()
        if draw(st.booleans()):
            form[draw(st.sampled_from(sorted(form)))] = draw(
                st.text(alphabet=st.sampled_from("\x00\x1ba@.é "), max_size=300)
            )
        body, content_type = encode_multipart_formdata(form)
        return body, content_type
    return encode(document), "application/json"


def _mutated_xml(draw: st.DrawFn, name: str) -> bytes:
    text = load_fixture("salesforce", name)[0].decode()
    nodes = list(re.finditer(r">([^<\s][^<]*)<", text))
    node = draw(st.sampled_from(nodes))
    value = draw(texts).replace(BIG_INT, "9" * 5000).replace(DEEP, "<a>" * 50)
    mutated = text[: node.start(1)] + escape(value) + text[node.end(1) :]
    return mutated.encode("utf-8", "surrogatepass")


class _Errors(logging.Handler):
    """The tracebacks of the unhandled errors the app logged (a 500 says nothing more)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = logging.Formatter().format(record)[-3000:]


def failure(response: TestResponse, kinds_world: KindsWorld) -> str:
    return (
        f"{response.status_code} {response.get_data(as_text=True)[:300]}\n{kinds_world.errors.last}"
    )


class KindsWorld:
    """One relay with a source of every kind, each named after its kind."""

    def __init__(self, workdir: Path, database_url: str | None = None):
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        database = f'database_url = "{database_url}"\n' if database_url else ""
        sources = "".join(
            f'\n[sources.{kind}]\nkind = "{kind}"\n{toml}' for kind, toml in SOURCES.items()
        )
        config = workdir / "consent-relay.toml"
        config.write_text(
            f'[service]\ndata_dir = "{data_dir}"\n{database}\n'
            f'[admin]\ntokens = ["{ADMIN_TOKEN}"]\nusername = "operator"\n'
            f'password = "{OPS_PASSWORD}"\n\n'
            '[destinations.engage]\nkind = "mapp-engage"\nbase_url = "http://127.0.0.1:8025"\n'
            'username = "api-user@example.com"\npassword = "engage-demo-password"\n' + sources
        )
        settings = load_settings(config, environ={})
        upgrade(make_engine(settings.database_url))
        self.app: Flask = create_app({"SETTINGS": settings, "TESTING": True})
        self.client = self.app.test_client()
        self.errors = _Errors()
        self.app.logger.addHandler(self.errors)

    def kind(self, name: str) -> SourceKind:
        kind: SourceKind = self.app.extensions["consent_relay"].kinds[name]
        return kind

    def send(self, kind: str, body: bytes, content_type: str) -> TestResponse:
        url = f"{BASE_URL}/webhooks/{kind}"
        signed = self.kind(kind).sign(body, content_type, url, time.time())
        path = signed.url.removeprefix(BASE_URL)
        return self.client.post(
            path, data=signed.body, headers=dict(signed.headers), base_url=BASE_URL
        )

    def ignored(self) -> list[IgnoredEvent]:
        with self.app.extensions["consent_relay"].sessions() as session:
            return list(session.scalars(select(IgnoredEvent).order_by(IgnoredEvent.id)))

    def admin(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def ops_client(self) -> FlaskClient:
        """A client signed in to the operator page; `ops_post` adds the CSRF token."""
        client = self.app.test_client()
        client.get("/ops/login")
        form = {"username": "operator", "password": OPS_PASSWORD, "csrf_token": csrf(client)}
        assert client.post("/ops/login", data=form).status_code == 303
        return client


def csrf(client: FlaskClient) -> str:
    with client.session_transaction("/ops") as session:
        return str(session["ops_csrf"])


def fixture_with(kind: str, name: str, path: tuple[Any, ...], value: Any) -> bytes:
    """A kind's JSON fixture with one value replaced (the path must exist)."""
    document = _document(kind, name)
    current = document
    for key in path[:-1]:
        current = current[key]
    current[path[-1]]  # noqa: B018  # a KeyError here is a wrong path in a test
    return encode(replaced(document, path, value))


# The cases (5): kind, fixture, JSON path, value, and the answer expected.
SURROGATE = "\ud800"
VENDOR_CASES = [
    ("standard-webhooks", "canonical", ("email",), BIG_INT, 400),
    ("typeform", "form_response", ("form_response", "definition", "fields", 0, "id"), [], 400),
    ("typeform", "form_response", ("form_response", "hidden"), "x", 400),
    ("typeform", "form_response", ("event_id",), "e" * 300, 422),
    ("typeform", "form_response", ("event_id",), "a\x00b", 422),
    ("tally", "form_response", ("data", "fields", 1, "options", 0, "id"), [], 400),
    ("tally", "form_response", ("eventId",), SURROGATE, 422),
    ("webflow", "form_submission", ("triggerType",), SURROGATE, 422),
    ("pipedrive", "create_person", ("meta", "action"), SURROGATE, 422),
    ("pipedrive", "create_person", ("meta", "id"), "a\x00b", 422),
    ("dynamics", "contact_update", ("Stage",), [], 400),
    ("dynamics", "contact_update", ("MessageName",), SURROGATE, 422),
    ("dynamics", "contact_update", ("MessageName",), "Up\x00date", 422),
    ("dynamics", "contact_update", ("OperationCreatedOn",), "/Date(" + "9" * 5000 + ")/", 202),
    ("hubspot", "workflow_contact", ("properties", "tracking_consent", "versions"), True, 400),
    ("hubspot", "workflow_contact", ("vid",), SURROGATE, 422),
    ("hubspot", "property_change", (0, "eventId"), BIG_INT, 400),
]

# Admin API requests that cannot be used (issue 5): url, and the parameter named.
BAD_ADMIN_QUERIES = [
    ("/admin/dead-letters?offset=99999999999999999999", "offset"),
    ("/admin/dead-letters?since=0001-01-01T00:00:00%2B14:00", "since"),
    ("/admin/dead-letters?until=9999-12-31T23:59:59-14:00", "until"),
    ("/admin/dead-letters?email=a%00b", "email"),
    ("/admin/dead-letters?email=%1B%5B31m", "email"),
    ("/admin/dead-letters?destination=engage%0A", "destination"),
]
# url, body, the answer, and the field named.
BAD_ADMIN_BODIES = [
    ("/admin/dead-letters/replay", b'{"ids": [' + b"9" * 5000 + b"]}", 400, None),
    ("/admin/dead-letters/replay", b'{"ids": [99999999999999999999]}', 422, "ids"),
    ("/admin/dead-letters/replay", b'{"email": "\\ud800@example.com"}', 422, "email"),
    ("/admin/dead-letters/replay", b'{"email": "a\\u0000b"}', 422, "email"),
    ("/admin/destinations/engage/pause", b'{"reason": "\\ud800"}', 422, "reason"),
    ("/admin/destinations/engage/pause", b'{"reason": "\\u001b[2J gone"}', 422, "reason"),
    ("/admin/destinations/engage/pause", b'{"reason": "a\\u0000b"}', 422, "reason"),
    ("/admin/destinations/engage/pause", b'{"reason": "\\u009b31m"}', 422, "reason"),
]
