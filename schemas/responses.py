"""The JSON bodies the service answers, for the OpenAPI document (service/http/openapi.py).

The handlers build these bodies themselves; tests/unit/test_openapi.py validates every real
answer against the schemas generated from these classes. Every field is required (the handlers
always send every key) and unknown keys are refused, so a body that gains or loses a key fails
those tests until this file says so too.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from schemas.admin import DEAD_LETTER_STATUSES
from schemas.consent import CONSENT_STATES

# RFC 9457 problem `type`s: this prefix and a slug (service/http/problems.py builds the bodies).
PROBLEM_TYPE_PREFIX = "urn:consent-relay:problem:"


def _text(*, null: bool = False, **kwargs: Any) -> fields.String:
    return fields.String(required=True, allow_none=null, **kwargs)


def _number(*, null: bool = False, **kwargs: Any) -> fields.Integer:
    return fields.Integer(required=True, allow_none=null, **kwargs)


def _time(*, null: bool = False) -> fields.DateTime:
    """An ISO 8601 time with its offset, as the handlers write it (datetime.isoformat())."""
    return fields.DateTime(required=True, allow_none=null)


def _doc(description: str) -> dict[str, Any]:
    return {"metadata": {"description": description}}


class ProblemSchema(Schema):
    """RFC 9457 problem details (`application/problem+json`)."""

    type = _text(validate=validate.Regexp("^" + PROBLEM_TYPE_PREFIX), **_doc("a URN per problem"))
    title = _text()
    status = _number(validate=validate.Range(min=400, max=599))
    detail = fields.String()
    errors = fields.Dict(
        **_doc(
            "422 only: the messages of each field by field name (`_schema`: the whole body), "
            "nested for the items of lists and objects"
        )
    )


EVENT_STATUSES = ("accepted", "duplicate", "ignored")


class EventOutcomeSchema(Schema):
    id = fields.String(
        metadata={"description": "the sender's id for the event (webhook-id, eventId, ...)"}
    )
    status = fields.String(required=True, validate=validate.OneOf(EVENT_STATUSES))
    event_id = fields.String(metadata={"description": "the event's public id in the ledger"})
    duplicate = fields.Boolean(validate=validate.Equal(True))
    ignored = fields.Boolean(validate=validate.Equal(True))
    reason = fields.String(metadata={"description": "why nothing was recorded (ignored)"})


class AcceptedSchema(Schema):
    """202: at least one event was recorded. With exactly one event, its fields are repeated
    at the top level."""

    status = fields.String(validate=validate.OneOf(EVENT_STATUSES))
    event_id = fields.String(metadata={"description": "the event's public id (one event)"})
    duplicate = fields.Boolean(validate=validate.Equal(True))
    ignored = fields.Boolean(validate=validate.Equal(True))
    reason = fields.String()
    events = fields.List(fields.Nested(EventOutcomeSchema), required=True)


class DuplicateSchema(AcceptedSchema):
    """200: nothing new; every event was a duplicate (same sender id) or ignored."""


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))


class ReadinessChecksSchema(Schema):
    database = fields.String(
        required=True, validate=validate.OneOf(["ok", "schema_outdated", "unreachable"])
    )
    broker = fields.String(required=True, validate=validate.OneOf(["ok", "unreachable"]))
    destinations = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(["active", "paused"])),
        required=True,
        metadata={"description": "each destination's state; empty when the ledger is not ok"},
    )


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "not_ready"]))
    checks = fields.Nested(ReadinessChecksSchema, required=True)


class DeadLetterSchema(Schema):
    id = _number()
    destination = _text()
    source = _text(**_doc("the configured webhook source"))
    email = _text(**_doc("as the sender wrote it"))
    decision = _text(validate=validate.OneOf(CONSENT_STATES))
    consent_source = _text()
    consent_source_id = _text(null=True)
    occurred_at = _time()
    received_at = _time()
    event_id = _text()
    reason = _text()
    detail = _text()
    last_status = _number(null=True, **_doc("Engage's last HTTP status"))
    last_body = _text(null=True, **_doc("Engage's last answer"))
    attempts = _number()
    first_failed_at = _time(null=True)
    created_at = _time()
    status = _text(validate=validate.OneOf(DEAD_LETTER_STATUSES))
    resolved_at = _time(null=True)
    replay_count = _number()


class AttemptSchema(Schema):
    started_at = _time()
    finished_at = _time()
    outcome = _text()
    http_status = _number(null=True)
    detail = _text(null=True)
    event_id = _text(**_doc("the decision being written"))


class DeadLetterDetailSchema(DeadLetterSchema):
    history = fields.List(
        fields.Nested(AttemptSchema),
        required=True,
        metadata={"description": "the last 50 attempts, oldest first"},
    )


class DeadLetterListSchema(Schema):
    dead_letters = fields.List(fields.Nested(DeadLetterSchema), required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class ReplayResultSchema(Schema):
    replayed = fields.List(fields.Integer(), required=True)
    skipped = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"description": "why each skipped dead letter was skipped, by id"},
    )
    # `unknown` would shadow marshmallow's Schema.unknown setting; the key is "unknown".
    unknown_ids = fields.List(fields.Integer(), required=True, data_key="unknown")
    enqueued = fields.Integer(
        required=True,
        metadata={"description": "delivery tasks published; the sweeper does the rest"},
    )


class DestinationSchema(Schema):
    name = _text()
    paused = fields.Boolean(required=True)
    paused_at = _time(null=True)
    paused_by = _text(null=True, **_doc('"auth" (credentials refused) or "operator"'))
    paused_reason = _text(null=True)
    paused_status = _number(null=True)
    next_probe_at = _time(null=True)
    last_probe_at = _time(null=True)
    last_probe_error = _text(null=True)
    resumed_at = _time(null=True)
    resumed_by = _text(null=True)


class DestinationListSchema(Schema):
    destinations = fields.List(fields.Nested(DestinationSchema), required=True)


class ResumedDestinationSchema(DestinationSchema):
    was_paused = fields.Boolean(required=True)


class ChainBreakSchema(Schema):
    contact_id = fields.Integer(required=True)
    seq = fields.Integer(
        required=True, allow_none=True, metadata={"description": "the link's position, or null"}
    )
    ref = fields.String(
        required=True, metadata={"description": "`event <id>`, `erasure <id>` or `head`"}
    )
    reason = fields.String(required=True)


class ChainVerificationSchema(Schema):
    """`POST /admin/ledger/verify`: what one verification of the chain found."""

    scope = fields.String(required=True, metadata={"description": "`all` or `contact <id>`"})
    ok = fields.Boolean(required=True)
    contacts = fields.Integer(required=True)
    links = fields.Integer(required=True)
    broken = fields.List(
        fields.Nested(ChainBreakSchema),
        required=True,
        metadata={"description": "the first broken link of each broken contact"},
    )
    audit = fields.Nested(
        "AuditVerificationSchema",
        required=True,
        metadata={"description": "the audit log's chain (checked when verifying everything)"},
    )
    finished_at = fields.String(required=True)


class AuditBreakSchema(Schema):
    seq = fields.Integer(required=True, allow_none=True)
    ref = fields.String(required=True, metadata={"description": "`audit <seq>` or `audit head`"})
    reason = fields.String(required=True)


class AuditVerificationSchema(Schema):
    entries = fields.Integer(required=True)
    ok = fields.Boolean(required=True)
    broken = fields.Nested(AuditBreakSchema, required=True, allow_none=True)


class AuditEntrySchema(Schema):
    """One operator action (docs: Data protection, audit log)."""

    v = fields.Integer(required=True)
    type = fields.String(required=True)
    seq = fields.Integer(required=True)
    at = fields.String(required=True)
    actor_kind = fields.String(required=True)
    actor = fields.String(required=True)
    client = fields.String(required=True, allow_none=True)
    channel = fields.String(required=True)
    action = fields.String(required=True)
    targets = fields.List(fields.String(), required=True)
    outcome = fields.String(required=True)
    chain_hash = fields.String(required=True)


class AuditLogSchema(Schema):
    """`GET /admin/audit`: the audit log, newest first."""

    entries = fields.List(fields.Nested(AuditEntrySchema), required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class ReprocessSchema(Schema):
    """`POST /admin/ignored/reprocess`: ignored event ids by what became of them."""

    recorded = fields.List(fields.Integer(), required=True)
    duplicates = fields.List(fields.Integer(), required=True)
    still_ignored = fields.List(fields.Integer(), required=True)
    unreadable = fields.List(fields.Integer(), required=True)
