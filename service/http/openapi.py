"""The OpenAPI 3.1 document of the HTTP API, served without auth at `GET /openapi.json`.

Built with apispec's MarshmallowPlugin from the schemas the handlers load requests with
(schemas/consent.py, schemas/admin.py) and from schemas/responses.py for the answers.
tests/unit/test_openapi.py validates the document, checks that every route is in it, and
validates the real answers of every documented operation and status against it.
"""

from __future__ import annotations

import functools
import json
from importlib import metadata
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response

from schemas import responses as bodies
from schemas.admin import (
    AuditQuerySchema,
    ContactChoiceSchema,
    DeadLetterQuerySchema,
    ErasureBodySchema,
    ExportQuerySchema,
    PauseBodySchema,
    ReplayBodySchema,
    ReprocessBodySchema,
)
from schemas.config import NAME_PATTERN
from schemas.consent import ConsentDecisionSchema
from schemas.text import MAX_BIGINT
from service.http import openapi_erasures  # its add_paths uses this module's helpers when called

bp = Blueprint("openapi", __name__)
OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
PROBLEM = "application/problem+json"
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}]
_OBJECT = {"type": "object"}
_STRING = {"type": "string"}
DESCRIPTION = (
    "Receives signed consent webhooks, records every decision in a ledger and writes each "
    "contact's latest decision to Mapp Engage. Every error is `application/problem+json` "
    "(RFC 9457). See the README for the behaviour behind each answer."
)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(_document_text(), mimetype=JSON)


@functools.cache
def _document_text() -> str:
    return json.dumps(openapi_document())


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (it does not depend on the configuration)."""
    spec = APISpec(
        title="Consent Relay",
        version=_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    _components(spec)
    _intake(spec)
    _health(spec)
    _admin_dead_letters(spec)
    _admin_destinations(spec)
    _admin_ledger(spec)
    openapi_erasures.add_paths(spec)
    spec.path(
        path="/openapi.json",
        operations={"get": _operation("meta", "This document", {"200": _json(_OBJECT, "OpenAPI")})},
    )
    return spec.to_dict()


def _version() -> str:
    try:
        return metadata.version("consent-relay")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _problem(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    content = {PROBLEM: {"schema": bodies.ProblemSchema}}
    return {
        "description": description,
        "content": content,
        **({"headers": headers} if headers else {}),
    }


def _operation(tag: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"tags": [tag], "summary": summary, "responses": responses, **extra}


def _param(
    where: str, name: str, schema: dict[str, Any], text: str, **extra: Any
) -> dict[str, Any]:
    return {
        "in": where,
        "name": name,
        "required": True,
        "schema": schema,
        "description": text,
    } | extra


def _components(spec: APISpec) -> None:
    spec.components.security_scheme(
        "adminToken",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the `[admin] tokens` of the config (at least 32 characters).",
        },
    )
    for name, schema, text in (
        ("RetryAfter", {"type": "integer"}, "Seconds to wait before retrying."),
        ("WWWAuthenticate", _STRING, 'The challenge: `Bearer realm="consent-relay-admin"`.'),
    ):
        spec.components.header(name, {"required": True, "schema": schema, "description": text})
    for name, text, example in (
        ("webhook-id", "Delivery id; a repeated id is a duplicate.", "msg_2KWPBgLlAfxdpx2AI54pPJ"),
        ("webhook-timestamp", "Integer Unix seconds of this delivery attempt.", "1782898200"),
        (
            "webhook-signature",
            'Space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` signatures; '
            "any configured secret of the source may match.",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ):
        spec.components.parameter(
            name, "header", _param("header", name, _STRING, text, example=example)
        )
    for name, answer in _shared_answers().items():
        spec.components.response(name, answer)


def _shared_answers() -> dict[str, dict[str, Any]]:
    return {
        "MalformedJson": _problem("`malformed-json`: the body is not UTF-8 JSON."),
        "UnsupportedMediaType": _problem(
            "`unsupported-media-type`: the body is not `application/json`."
        ),
        "ValidationFailed": _problem(
            "`validation-failed`: the messages of each field are in `errors` (text refuses "
            "control characters and lone surrogates; ids and offsets end at 2^63-1; times "
            "must be convertible to UTC)."
        ),
        "LedgerUnavailable": _problem(
            "`ledger-unavailable`: the ledger cannot be reached; nothing was recorded or "
            "changed; retry after `Retry-After`. Never an answer to bad input.",
            {"Retry-After": "RetryAfter"},
        ),
        "AdminUnauthorized": _problem(
            "`unauthorized`: no bearer token, or an unknown one.",
            {"WWW-Authenticate": "WWWAuthenticate"},
        ),
        "AdminDisabled": _problem("`admin-api-disabled`: no `[admin] tokens` are configured."),
        "UnknownDeadLetter": _problem("`unknown-dead-letter`: no dead letter with this id."),
        "UnknownDestination": _problem("`unknown-destination`: no destination with this name."),
        "UnknownContact": _problem("`unknown-contact`: no such contact in the ledger."),
    }


def _intake(spec: APISpec) -> None:
    pattern = {"type": "string", "pattern": NAME_PATTERN.pattern}
    source = _param("path", "source_name", pattern, "A configured source (`[sources.<name>]`).")
    responses = {
        "202": _json(bodies.AcceptedSchema, "Accepted: recorded in the ledger, delivery queued."),
        "200": _json(
            bodies.DuplicateSchema,
            "Nothing new: duplicates (same source and event id) or ignored events.",
        ),
        "400": _problem(
            "`malformed-json`: the body is not UTF-8 JSON (an integer of more than 4300 digits "
            "included); `malformed-body`: a value of the sender's payload has the wrong JSON "
            "type, named by its path in `detail`."
        ),
        "401": _problem("`invalid-signature`: missing or bad headers, signature or timestamp."),
        "404": _problem("`unknown-source`: no source with this name."),
        "413": _problem("`request-entity-too-large`: the body is over `max_body_bytes`."),
        "415": "UnsupportedMediaType",
        "422": _problem(
            "`validation-failed`: the messages of each field are in `errors` (also an event "
            "id or type the ledger cannot store: NUL, control characters, lone surrogates, "
            "too long); `unstorable-value`: the ledger refused a value that passed validation "
            "(a retry of the same body fails the same way)."
        ),
        "503": "LedgerUnavailable",
    }
    operation = _operation(
        "intake",
        "Receive one signed consent decision (Standard Webhooks)",
        responses,
        operationId="receiveWebhook",
        description="The signature covers the raw body bytes. Checks run in this order: "
        "source (404), size (413), signature (401), content type (415), JSON (400), fields (422).",
        parameters=[source, "webhook-id", "webhook-timestamp", "webhook-signature"],
        requestBody={
            "required": True,
            "content": {JSON: {"schema": ConsentDecisionSchema}},
        },
    )
    spec.path(path="/webhooks/{source_name}", operations={"post": operation})


def _health(spec: APISpec) -> None:
    healthz = _operation(
        "health", "Liveness", {"200": _json(bodies.HealthSchema, "The web process is up.")}
    )
    readyz = _operation(
        "health",
        "Readiness: ledger migrated, broker reachable, no destination paused",
        {
            "200": _json(bodies.ReadinessSchema, "Ready."),
            "503": _json(bodies.ReadinessSchema, "Not ready; `checks` says what is not."),
        },
    )
    spec.path(path="/healthz", operations={"get": {**healthz, "operationId": "healthz"}})
    spec.path(path="/readyz", operations={"get": {**readyz, "operationId": "readyz"}})


def _admin(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    guarded = {"401": "AdminUnauthorized", "403": "AdminDisabled", **responses}
    guarded["503"] = "LedgerUnavailable"
    return _operation("admin", summary, guarded, security=ADMIN_SECURITY, **extra)


def _json_body(schema: Any, *, required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}}}


def _admin_dead_letters(spec: APISpec) -> None:
    dead_letter_id = _param(
        "path",
        "dead_letter_id",
        {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT},
        "A dead letter's id (any other integer is not found: 404).",
    )
    replayed = _json(bodies.ReplayResultSchema, "What was replayed, skipped and enqueued.")
    listing = _admin(
        "List dead letters, newest first",
        {"200": _json(bodies.DeadLetterListSchema, "A page."), "422": "ValidationFailed"},
        parameters=[{"in": "query", "schema": DeadLetterQuerySchema}],
        operationId="listDeadLetters",
    )
    detail = _admin(
        "One dead letter with its last 50 attempts",
        {
            "200": _json(bodies.DeadLetterDetailSchema, "The dead letter."),
            "404": "UnknownDeadLetter",
        },
        parameters=[dead_letter_id],
        operationId="getDeadLetter",
    )
    replay_one = _admin(
        "Replay one dead letter",
        {"200": replayed, "404": "UnknownDeadLetter"},
        parameters=[dead_letter_id],
        operationId="replayDeadLetter",
    )
    replay_many = _admin(
        'Replay dead letters by `ids`, by filters, or `{"all": true}` (exactly one)',
        {
            "200": replayed,
            "400": "MalformedJson",
            "415": "UnsupportedMediaType",
            "422": "ValidationFailed",
        },
        operationId="replayDeadLetters",
        **_json_body(ReplayBodySchema, required=True),
    )
    spec.path(path="/admin/dead-letters", operations={"get": listing})
    spec.path(path="/admin/dead-letters/{dead_letter_id}", operations={"get": detail})
    spec.path(path="/admin/dead-letters/{dead_letter_id}/replay", operations={"post": replay_one})
    spec.path(path="/admin/dead-letters/replay", operations={"post": replay_many})


def _admin_destinations(spec: APISpec) -> None:
    name = _param("path", "name", _STRING, "A configured destination.")
    listing = _admin(
        "Every configured destination and its pause state",
        {"200": _json(bodies.DestinationListSchema, "The destinations.")},
        operationId="listDestinations",
    )
    pause = _admin(
        "Pause a destination (lifted only by an operator)",
        {
            "200": _json(bodies.DestinationSchema, "The destination, paused."),
            "400": "MalformedJson",
            "404": "UnknownDestination",
            "415": "UnsupportedMediaType",
            "422": "ValidationFailed",
        },
        parameters=[name],
        operationId="pauseDestination",
        **_json_body(PauseBodySchema, required=False),
    )
    resume = _admin(
        "Resume a destination; the sweeper delivers its pending work",
        {
            "200": _json(bodies.ResumedDestinationSchema, "The destination and `was_paused`."),
            "404": "UnknownDestination",
        },
        parameters=[name],
        operationId="resumeDestination",
    )
    spec.path(path="/admin/destinations", operations={"get": listing})
    spec.path(path="/admin/destinations/{name}/pause", operations={"post": pause})
    spec.path(path="/admin/destinations/{name}/resume", operations={"post": resume})


def _admin_ledger(spec: APISpec) -> None:
    verify = _admin(
        "Verify the tamper-evident chain of every contact (empty body) or of one",
        {
            "200": _json(bodies.ChainVerificationSchema, "What the verification found."),
            "400": "MalformedJson",
            "404": "UnknownContact",
            "415": "UnsupportedMediaType",
            "422": "ValidationFailed",
        },
        operationId="verifyLedger",
        **_json_body(ContactChoiceSchema, required=False),
    )
    spec.path(path="/admin/ledger/verify", operations={"post": verify})
    log = _json(bodies.AuditLogSchema, "The audit log, newest first (docs: audit log).")
    log["content"]["text/csv"] = {"schema": {"type": "string"}}
    audit = _admin(
        "The operator audit log: who paused, resumed, replayed, exported, erased, reprocessed",
        {"200": log, "422": "ValidationFailed"},
        parameters=[{"in": "query", "schema": AuditQuerySchema}],
        operationId="auditLog",
    )
    spec.path(path="/admin/audit", operations={"get": audit})
    again = _admin(
        "Run the kept bodies of ignored events through the current mapping (idempotent)",
        {
            "200": _json(
                bodies.ReprocessSchema, "The ignored events' ids, by what became of them."
            ),
            "400": "MalformedJson",
            "404": _problem("`unknown-source`: no such source is configured."),
            "415": "UnsupportedMediaType",
            "422": "ValidationFailed",
        },
        operationId="reprocessIgnored",
        **_json_body(ReprocessBodySchema, required=False),
    )
    spec.path(path="/admin/ignored/reprocess", operations={"post": again})
    contact_id = _param(
        "path",
        "contact_id",
        {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT},
        "A contact's id (any other integer is not found: 404).",
    )
    record = _json(_OBJECT, "The record (docs: Data protection, export).")
    record["content"]["text/csv"] = {"schema": {"type": "string"}}
    exported = _admin(
        "Export one person's record: decisions, evidence, deliveries, erasures, chain values",
        {"200": record, "404": "UnknownContact", "422": "ValidationFailed"},
        parameters=[contact_id, {"in": "query", "schema": ExportQuerySchema}],
        operationId="exportContact",
    )
    spec.path(path="/admin/contacts/{contact_id}/export", operations={"get": exported})
    erased = _admin(
        "Erase one person, keeping the proof (docs: Data protection, erasure)",
        {
            "200": _json(
                openapi_erasures.ERASED,
                "The erasure: id, time, counts, its chain link and each destination's status.",
            ),
            "400": "MalformedJson",
            "404": "UnknownContact",
            "409": _problem(
                "`already-erased`, or `delivery-in-flight` (nothing changed: retry after its "
                "`Retry-After`)."
            ),
            "415": "UnsupportedMediaType",
            "422": "ValidationFailed",
        },
        parameters=[contact_id],
        operationId="eraseContact",
        **_json_body(ErasureBodySchema, required=True),
    )
    spec.path(path="/admin/contacts/{contact_id}/erase", operations={"post": erased})
