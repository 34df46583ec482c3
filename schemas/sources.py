"""`[sources.<name>]` in `consent-relay.toml`: one table per configured sender.

Every kind shares the keys `kind`, `secrets`, `source`, `source_id`, `mapping`; a few kinds
need more (`username` for Basic auth, `url` for HubSpot v2/v3, `organization_ids` for
Salesforce). Which keys a kind needs, and what its secrets look like, is the table below,
so that a key a kind would silently ignore is an error naming it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from schemas.base import StrictSchema
from schemas.consent import CONSENT_STATES, MAX_LABEL_LENGTH, MAX_PURPOSES, MAX_URL_LENGTH
from schemas.hmac import HmacSchema

# The Standard Webhooks spec asks for 24-64 random bytes; accept 16 as a floor for older senders.
MIN_SECRET_BYTES = 16
# Tokens we ask operators to generate (`consent-relay sources new-token`): 32 url-safe bytes.
MIN_TOKEN_CHARS = 32
# Secrets the vendor generates or the operator types into the vendor's form.
MIN_SHARED_SECRET_CHARS = 6
MIN_PASSWORD_CHARS = 16
KIND_OPTIONS = (
    *("username", "url", "signature_versions", "organization_ids", "hmac"),
    "erase_on_privacy_deletion",
)
HUBSPOT_VERSIONS = ("v1", "v2", "v3")
# The names each kind offers to the `source`/`source_id` templates (docs/sources/index.md); the
# canonical kinds take their labels from the payload and offer none. The config loader checks
# templates against this table, and each kind (service/sources/) publishes it as VARIABLES.
KIND_VARIABLES: dict[str, frozenset[str]] = {
    "standard-webhooks": frozenset(),
    "token": frozenset(),
    "dynamics": frozenset(
        {
            "entity",
            "record_id",
            "organization_id",
            "organization_name",
            "operation_id",
            "correlation_id",
            "message",
        }
    ),
    "hubspot": frozenset(
        {
            "object_id",
            "portal_id",
            "form_id",
            "conversion_id",
            "subscription_type",
            "event_id",
            "change_id",
        }
    ),
    "jotform": frozenset({"form_id", "form_title", "submission_id"}),
    "pipedrive": frozenset({"person_id", "company_id", "webhook_id", "event_id", "action"}),
    "salesforce": frozenset(
        {"organization_id", "action_id", "object_type", "record_id", "notification_id"}
    ),
    "tally": frozenset(
        {"form_id", "form_name", "response_id", "submission_id", "respondent_id", "event_id"}
    ),
    "typeform": frozenset({"form_id", "form_title", "response_id", "event_id"}),
    "webflow": frozenset({"form_name", "site_id", "submission_id", "form_id"}),
    # and the names of its `[sources.<name>.hmac.variables]` (schemas/hmac.py)
    "hmac": frozenset({"event_id", "event_type"}),
}


@dataclass(frozen=True)
class KindRules:
    secret: str  # whsec | token | shared | password
    required: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    canonical: bool = False  # the payload is our canonical decision: no mapping


KINDS: dict[str, KindRules] = {
    "standard-webhooks": KindRules("whsec", canonical=True),
    "token": KindRules("token", allowed=("username",), canonical=True),
    "typeform": KindRules("shared"),
    "tally": KindRules("shared"),
    "webflow": KindRules("shared"),
    "jotform": KindRules("token"),
    "hubspot": KindRules(
        "shared", allowed=("url", "signature_versions", "erase_on_privacy_deletion")
    ),
    "salesforce": KindRules("token", required=("organization_ids",)),
    "pipedrive": KindRules("password", required=("username",)),
    "dynamics": KindRules("token"),
    "hmac": KindRules("shared", required=("hmac",)),
}
SOURCE_KINDS = tuple(KINDS)


def decode_whsec(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 of the part after `whsec_`."""
    body = secret.removeprefix("whsec_")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("Secret is not valid base64 after the whsec_ prefix.") from exc


class MappingSchema(StrictSchema):
    # Where the address is (a field ref/key/label/name/property); default: the kind's own.
    email = fields.String(load_default=None, validate=validate.Length(min=1, max=255))
    # Where the consent answer is; without it every event has no answer (see when_missing).
    consent = fields.String(load_default=None, validate=validate.Length(min=1, max=255))
    # Answer (compared case-insensitively) -> state; replaces the default table when given.
    values = fields.Dict(
        keys=fields.String(validate=validate.Length(max=255)),
        values=fields.String(validate=validate.OneOf(CONSENT_STATES)),
        load_default=None,
    )
    when_missing = fields.String(
        load_default="ignore", validate=validate.OneOf(["ignore", "unknown"])
    )


class EvidenceSchema(StrictSchema):
    """`[sources.<name>.evidence]`: templates over the kind's variables, or constants, for the
    evidence fields (schemas/consent.py); a canonical payload's own values take precedence."""

    notice_version = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))
    notice_url = fields.String(validate=validate.Length(min=1, max=MAX_URL_LENGTH))
    purposes = fields.List(
        fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH)),
        validate=validate.Length(min=1, max=MAX_PURPOSES),
    )
    collection_method = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))
    lawful_basis = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))
    jurisdiction = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))
    language = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))


class SourceSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(SOURCE_KINDS))
    secrets = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    # Templates over the payload's variables, e.g. "typeform:{form_id}", "{form_id}:{response_id}".
    source = fields.String(required=True, validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))
    source_id = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH))
    timestamp_tolerance_seconds = fields.Integer(validate=validate.Range(min=1))
    mapping = fields.Nested(MappingSchema, load_default=lambda: MappingSchema().load({}))
    evidence = fields.Nested(EvidenceSchema, load_default=dict)
    username = fields.String(validate=validate.Length(min=1, max=255))
    # The URL as configured at HubSpot (v2/v3 sign it); default: the URL as received.
    url = fields.Url(schemes={"http", "https"}, require_tld=False)
    signature_versions = fields.List(
        fields.String(validate=validate.OneOf(HUBSPOT_VERSIONS)),
        validate=validate.Length(min=1),
    )
    organization_ids = fields.List(
        fields.String(validate=validate.Regexp(r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$")),
        validate=validate.Length(min=1),
    )
    hmac = fields.Nested(HmacSchema)
    # HubSpot: a contact.privacyDeletion event erases the matching contact(s); off by default
    # (docs/sources/hubspot.md#privacy-deletion).
    erase_on_privacy_deletion = fields.Boolean()

    @validates_schema
    def _fits_kind(self, data: dict[str, Any], **_: Any) -> None:
        rules = KINDS[data["kind"]]
        errors: dict[str, Any] = {}
        for key in KIND_OPTIONS:
            if key in data and key not in rules.allowed + rules.required:
                errors[key] = [f"Not used by kind {data['kind']!r}."]
        for key in rules.required:
            if key not in data:
                errors[key] = [f"Required by kind {data['kind']!r}."]
        if rules.canonical and data["mapping"] != MappingSchema().load({}):
            errors["mapping"] = [f"Kind {data['kind']!r} sends canonical decisions: no mapping."]
        # The hmac kind knows no e-mail field of its own: the mapping must name it.
        needed = ("consent", "email") if data["kind"] == "hmac" else ("consent",)
        mapping_errors = {
            key: [f"Required by kind {data['kind']!r}."]
            for key in needed
            if not rules.canonical and data["mapping"][key] is None
        }
        if mapping_errors:
            errors["mapping"] = mapping_errors
        if rules.canonical and "source_id" in data:
            errors["source_id"] = [f"Kind {data['kind']!r} takes source_id from the payload."]
        secret_errors = _secret_errors(rules.secret, data["secrets"])
        if secret_errors:
            errors["secrets"] = secret_errors
        if errors:
            raise ValidationError(errors)


def _secret_errors(rule: str, secrets: list[str]) -> dict[int, list[str]]:
    errors = {}
    for index, secret in enumerate(secrets):
        problem = _secret_problem(rule, secret)
        if problem:
            errors[index] = [problem]
    return errors


def _secret_problem(rule: str, secret: str) -> str | None:
    if rule == "whsec":
        try:
            key = decode_whsec(secret)
        except ValidationError as exc:
            return str(exc.messages[0])
        if len(key) < MIN_SECRET_BYTES:
            return f"Secret must decode to at least {MIN_SECRET_BYTES} bytes."
        return None
    minimum = {"token": MIN_TOKEN_CHARS, "password": MIN_PASSWORD_CHARS}.get(
        rule, MIN_SHARED_SECRET_CHARS
    )
    if len(secret) < minimum:
        return f"Secret must be at least {minimum} characters."
    if not secret.isprintable() or secret != secret.strip():
        return "Secret must be printable, without surrounding spaces."
    return None
