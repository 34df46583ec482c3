"""Requests of the admin API (`/admin/...`): query strings and JSON bodies.

Unknown keys are rejected, as everywhere else: a misspelt filter (`destinaton=`) must not
silently widen a listing, let alone a replay.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from schemas.base import StrictSchema
from schemas.config import NAME_PATTERN
from schemas.consent import MAX_EMAIL_LENGTH
from schemas.text import MAX_BIGINT, BigId, PlainText, UtcDateTime

DEAD_LETTER_STATUSES = ("open", "replayed", "superseded")
STATUS_FILTERS = (*DEAD_LETTER_STATUSES, "all")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_REPLAY_IDS = 10_000
MAX_REASON_LENGTH = 500
FILTER_KEYS = ("destination", "source", "email", "since", "until")


class _Filters(StrictSchema):
    destination = PlainText(max_length=64, pattern=NAME_PATTERN)
    source = PlainText(max_length=64, pattern=NAME_PATTERN)
    # Not fields.Email: this only looks addresses up, and a lookup of a bad one finds nothing.
    email = PlainText(max_length=MAX_EMAIL_LENGTH)
    since = UtcDateTime()
    until = UtcDateTime()

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError("Must be later than since.", "until")


class DeadLetterQuerySchema(_Filters):
    """`GET /admin/dead-letters?status=...&destination=...&limit=...`"""

    status = fields.String(load_default="open", validate=validate.OneOf(STATUS_FILTERS))
    limit = fields.Integer(
        load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_BIGINT))


class ReplayBodySchema(_Filters):
    """`POST /admin/dead-letters/replay`: ids, or filters, or `{"all": true}`; one of them."""

    ids = fields.List(
        BigId(strict=True),
        validate=validate.Length(min=1, max=MAX_REPLAY_IDS),
    )
    # Strict booleans: "all": "false" must not replay everything.
    replay_all = fields.Boolean(data_key="all", truthy={True}, falsy={False}, load_default=False)

    @validates_schema
    def _one_selection(self, data: dict[str, Any], **_: Any) -> None:
        chosen = [
            name
            for name, given in (
                ("ids", "ids" in data),
                ("filters", any(key in data for key in FILTER_KEYS)),
                ("all", data.get("replay_all", False)),
            )
            if given
        ]
        if not chosen:
            raise ValidationError(
                'Give ids, filters (destination, source, email, since, until) or "all": true.',
                "_schema",
            )
        if len(chosen) > 1:
            raise ValidationError(f"Give only one of {' and '.join(chosen)}.", "_schema")


class PauseBodySchema(StrictSchema):
    """`POST /admin/destinations/<name>/pause`, optional body."""

    reason = PlainText(load_default="paused by an operator", max_length=MAX_REASON_LENGTH)


class ContactLookupSchema(StrictSchema):
    """The operator page's contact search (`POST /ops/contacts`)."""

    email = PlainText(required=True, max_length=MAX_EMAIL_LENGTH)


class ContactChoiceSchema(StrictSchema):
    """Which contact: `contact_id`, or `email` (compared as the intake compares it). An empty
    body, where a command allows it, means every contact."""

    contact_id = BigId(strict=True)
    email = PlainText(max_length=MAX_EMAIL_LENGTH)

    @validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if "contact_id" in data and "email" in data:
            raise ValidationError("Give contact_id or email, not both.", "_schema")


class ExportQuerySchema(StrictSchema):
    """`GET /admin/contacts/<id>/export?format=json|csv`."""

    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))


class ReprocessBodySchema(StrictSchema):
    """`POST /admin/ignored/reprocess`: every source's kept ignored events, or one source's."""

    source = fields.String(load_default=None, validate=validate.Length(min=1, max=64))


class AuditQuerySchema(StrictSchema):
    """`GET /admin/audit?format=json|csv&limit=&offset=`: the audit log, newest first."""

    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**31 - 1))


class AcknowledgeBodySchema(StrictSchema):
    """`POST /admin/erasures/<id>/destinations/<name>/acknowledge`: what the operator does
    instead (in the audit log: no personal data, e.g. a ticket number)."""

    note = PlainText(required=True, max_length=MAX_REASON_LENGTH)


class ErasureBodySchema(StrictSchema):
    """`POST /admin/contacts/<id>/erase`: who asked and why (both kept in the ledger, in the
    chain: write no personal data here, e.g. a ticket number rather than the person's name)."""

    reason = PlainText(required=True, max_length=MAX_REASON_LENGTH)
    requested_by = PlainText(required=True, max_length=255)
