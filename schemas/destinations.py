"""Schemas of `[destinations.<name>]`, one per `kind`, picked by `DestinationField`.

Every schema is strict (unknown keys are errors) and every error names its key, like the rest
of schemas/config.py. Vendor facts are cited from docs/reference/ (the peers' pages and
mapping.md); defaults that no primary source confirms are marked UNVERIFIED.

The peers (Acoustic Connect, Dotdigital, MoEngage) record consent to *receive* e-mail, while
the relay carries consent to *tracking*
(docs/reference/mapping.md#tracking-consent-vs-marketing-opt-in,
docs/reference/mapping.md#tracking-consent-vs-marketing-opt-in). So each peer has a `mode`:
`attribute` (default) writes the decision, source and source id into custom fields named
here; `channel_consent` maps the decision onto the e-mail channel status (lossy: see
workers/destinations.py).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, missing, validate, validates_schema

from schemas.base import StrictSchema

ENGAGE = "mapp-engage"
ACOUSTIC = "acoustic-connect"
DOTDIGITAL = "dotdigital"
MOENGAGE = "moengage"
DESTINATION_KINDS = (ENGAGE, ACOUSTIC, DOTDIGITAL, MOENGAGE)
MODES = ("attribute", "channel_consent")
# What a template over a decision may name (MoEngage `customer_id`).
DECISION_FIELDS = ("email", "source", "source_id")
# A rate-limit key names an account in Redis keys and the ledger's rate_limits table.
RATE_LIMIT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,47}$"
# HTTP calls one write can make, for the lease check: Engage update, create, update
# (docs/reference/engage.md#endpoints); Dotdigital attribute mode looks the contact up, then PATCHes
# (docs/reference/dotdigital.md#endpoints); the others one call.
CALLS_PER_WRITE = {ENGAGE: 3, ACOUSTIC: 1, DOTDIGITAL: 2, MOENGAGE: 1}
# Keys every destination has; DestinationSettings takes them as fields, the rest as `options`.
COMMON_KEYS = (
    "kind",
    "base_url",
    "username",
    "password",
    "connect_timeout_seconds",
    "read_timeout_seconds",
    "rate_limit_per_second",
    "rate_limit_headroom",
    "rate_limit_key",
    "verify_share",
    "verify_policy",
    "erase_at_destination",
)
# Kinds whose API can read a contact's consent back (workers/verification/): Engage
# `contact/get` (docs/reference/engage.md#endpoints), Dotdigital's look-up
# (docs/reference/dotdigital.md#endpoints). Acoustic and MoEngage are unverifiable
# (docs/delivery/verification.md).
VERIFIABLE_KINDS = (ENGAGE, DOTDIGITAL)
# Kinds whose API documents a delete call the relay makes for an erasure (GDPR Art. 19):
# Engage `POST /contact/delete`, MoEngage Delete User `POST /v1/customer/delete`
# (docs/reference/consent-records.md#vendor-delete-calls). The others refuse
# `erase_at_destination = true` at start-up, with ERASE_UNSUPPORTED's reason.
ERASABLE_KINDS = (ENGAGE, MOENGAGE)
ERASE_UNSUPPORTED = {
    ACOUSTIC: "Acoustic Connect documents no delete call in our sources (UNVERIFIED)",
    DOTDIGITAL: "Dotdigital's delete call is not confirmed by our sources (UNVERIFIED)",
}
# What a read-back that differs from the latest decision (drift) leads to.
VERIFY_POLICIES = ("repair", "report")


def _decision_template(template: str) -> None:
    """A template over the decision, like a source's `source` template: plain `{name}`s of
    DECISION_FIELDS only (no `{a.b}`), and something to render."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValidationError(f"Not a valid template: {exc}.") from exc
    unknown = sorted(set(names) - set(DECISION_FIELDS))
    if unknown or not template.strip():
        allowed = ", ".join(f"{{{name}}}" for name in DECISION_FIELDS)
        raise ValidationError(f"Use text and {allowed} only.")


def template_names(template: str) -> list[str]:
    """The `{name}`s of a template over the decision."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_decision_template(template: str, values: Mapping[str, str | None]) -> str:
    """The template over a decision's `email`, `source` and `source_id`; raises KeyError
    naming what this decision lacks (a config problem, never a retry)."""
    missing = sorted(name for name in template_names(template) if not values.get(name))
    if missing:
        raise KeyError(", ".join(missing))
    return template.format_map(values)


def erasure_template(kind: str, options: Mapping[str, Any]) -> str:
    """What a destination's delete call names the person by, as a template over the newest
    decision: Engage the address (`{"type": "EMAIL"}`); MoEngage the user's customer_id, as
    its client renders it for every write (workers/destinations/moengage.py)."""
    if kind == MOENGAGE:
        return str(options.get("customer_id") or "{email}")
    return "{email}"


def _secret() -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1))


def _field_name(default: str) -> fields.String:
    return fields.String(load_default=default, validate=validate.Length(min=1, max=255))


def _rate(default: float) -> fields.Float:
    return fields.Float(load_default=default, validate=validate.Range(min=0.01))


class _DestinationSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(DESTINATION_KINDS))
    base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    connect_timeout_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.1))
    read_timeout_seconds = fields.Float(load_default=40.0, validate=validate.Range(min=0.1))
    # Pace this far below the limit so that network jitter cannot bunch requests over it.
    rate_limit_headroom = fields.Float(load_default=0.05, validate=validate.Range(min=0.0, max=0.5))
    # Vendors count their limits per account (docs/reference/engage.md#rate-limits,
    # docs/reference/dotdigital.md#rate-limits, docs/reference/moengage.md#rate-limits):
    # destinations with the same key share one pace. None: derived from the base URL and the
    # credentials (workers/ratelimit/keys.py), so entries on one account share it without saying so.
    rate_limit_key = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            RATE_LIMIT_KEY_PATTERN, error="Use 1-48 letters, digits, '.', '_', ':' or '-'."
        ),
    )
    # The share of the rate limit that read-back verification may spend (0: never read back).
    verify_share = fields.Float(load_default=0.1, validate=validate.Range(min=0.0, max=0.5))
    # Drift: `repair` re-sends the latest decision, `report` only counts, logs and shows it.
    verify_policy = fields.String(load_default="repair", validate=validate.OneOf(VERIFY_POLICIES))
    # Pass an erasure on through the vendor's delete call (docs/data-protection.md#at-destinations).
    # Off by default: deleting the vendor's contact also deletes what the relay never wrote.
    erase_at_destination = fields.Boolean(load_default=False)

    @validates_schema
    def _erasable(self, data: dict[str, Any], **_kwargs: Any) -> None:
        kind = data.get("kind")
        if data.get("erase_at_destination") and kind not in ERASABLE_KINDS:
            reason = ERASE_UNSUPPORTED.get(str(kind), "no delete call is known")
            raise ValidationError(
                f"Not supported for {kind}: {reason}. Leave it off and erase there by hand.",
                "erase_at_destination",
            )


class EngageSchema(_DestinationSchema):
    username = _secret()
    password = _secret()
    # Engage: "some calls take more than 30 s; set client timeouts to match"
    # (docs/reference/engage.md#base-url-auth-headers)
    read_timeout_seconds = fields.Float(load_default=40.0, validate=validate.Range(min=0.1))
    # Engage: about 10 transactions per second per account (docs/reference/engage.md#rate-limits).
    rate_limit_per_second = _rate(10.0)


class _PeerSchema(_DestinationSchema):
    mode = fields.String(load_default="attribute", validate=validate.OneOf(MODES))
    read_timeout_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0.1))
    consent_field = _field_name("tracking_consent")
    source_field = _field_name("tracking_consent_source")
    source_id_field = _field_name("tracking_consent_source_id")


class AcousticSchema(_PeerSchema):
    api_key = _secret()  # header x-api-key (docs/reference/acoustic.md#base-url-auth-headers)
    # "The ID of your audience": Required on the consent page
    # (docs/reference/acoustic.md#operations), absent from every example of the current reference
    # (https://developer.goacoustic.com/acoustic-connect/reference/ update-contacts-): not required
    # here, sent whenever it is configured (UNVERIFIED).
    data_set_id = fields.String(load_default=None, allow_none=True)
    # Contacts are addressed by their e-mail (`addressable`, docs/reference/acoustic.md#operations);
    # attribute names are case-sensitive (docs/reference/acoustic.md#operations).
    email_attribute = _field_name("Email")
    # updateContactInputs is an array (docs/reference/acoustic.md#operations); the maximum per call
    # is UNVERIFIED.
    batch_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    # No published rate limit for Connect (docs/reference/acoustic.md#rate-limits, UNVERIFIED): a
    # cautious default.
    rate_limit_per_second = _rate(5.0)


class DotdigitalSchema(_PeerSchema):
    # the API user, e.g. apiuser-xxx@apiconnector.com
    # (docs/reference/dotdigital.md#base-url-auth-headers)
    username = _secret()
    password = _secret()
    # Data field names are conventionally upper case in Dotdigital
    # (docs/reference/dotdigital.md#endpoints example "FIRSTNAME").
    consent_field = _field_name("TRACKING_CONSENT")
    source_field = _field_name("TRACKING_CONSENT_SOURCE")
    source_id_field = _field_name("TRACKING_CONSENT_SOURCE_ID")
    # A consent record (v3 `consentRecords`) with each `granted` decision: the wording the
    # person agreed to and the page it was shown on; the time is the decision's. The relay
    # does not capture the IP address or user agent
    # (docs/delivery/peers.md#dotdigital-consent-records).
    consent_text = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=2000)
    )
    consent_url = fields.Url(
        load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False
    )
    # Tiered limits per minute, by package; the one published figure is Basic's Low tier,
    # "35 calls per minute (0.5/sec ...)"; the flat scheme allows 2000/hour
    # (docs/reference/dotdigital.md#rate-limits). Check Settings > Access > API rate limits and
    # raise it.
    rate_limit_per_second = _rate(0.5)

    @validates_schema
    def _consent_record_complete(self, data: dict[str, Any], **_kwargs: Any) -> None:
        # Dotdigital requires both in a consent record (https://developer.dotdigital.com/reference/importcontact).
        if (data.get("consent_text") is None) != (data.get("consent_url") is None):
            missing = "consent_url" if data.get("consent_url") is None else "consent_text"
            raise ValidationError("Set consent_text and consent_url together.", missing)


class MoEngageSchema(_PeerSchema):
    # the Workspace ID: Basic-auth user and MOE-APPKEY header
    # (docs/reference/moengage.md#base-url-auth-headers)
    app_id = _secret()
    # the Data API key: Basic-auth password (docs/reference/moengage.md#base-url-auth-headers)
    api_key = _secret()
    # The user's MoEngage customer_id, a template over the decision ({email}, {source},
    # {source_id}). Track User keys users by it (default "{email}"); the opt-in endpoint
    # needs it with PII tokenization and in workspaces that answer "customer_id is
    # mandatory" (https://www.moengage.com/docs/api/email-subscription/email-subscription-overview).
    # Unset in channel_consent mode: email_id is sent, which updates every user with it.
    customer_id = fields.String(load_default=None, allow_none=True, validate=_decision_template)
    # The opt-in endpoint allows 1000 requests/min and 360K/day
    # (docs/reference/moengage.md#rate-limits): the daily cap is 4.17/s sustained, and one pace must
    # respect both.
    rate_limit_per_second = _rate(4.0)

    @validates_schema
    def _erasable_by_customer_id(self, data: dict[str, Any], **_kwargs: Any) -> None:
        # Delete User names the user by customer_id or moengage_id only
        # (https://www.moengage.com/docs/api/user/delete-users); in channel_consent mode
        # without `customer_id` the relay knows the address alone.
        if (
            data.get("erase_at_destination")
            and data.get("mode") == "channel_consent"
            and not data.get("customer_id")
        ):
            raise ValidationError(
                "MoEngage's Delete User needs the user's customer_id: set customer_id.",
                "erase_at_destination",
            )


SCHEMAS: dict[str, type[_DestinationSchema]] = {
    ENGAGE: EngageSchema,
    ACOUSTIC: AcousticSchema,
    DOTDIGITAL: DotdigitalSchema,
    MOENGAGE: MoEngageSchema,
}


class DestinationField(fields.Field):
    """A destination table, loaded with the schema of its `kind`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("Not a valid mapping type.")
        schema = SCHEMAS.get(str(value.get("kind")))
        if schema is None:
            errors: dict[str, Any] = {"kind": [f"Must be one of: {', '.join(DESTINATION_KINDS)}."]}
            try:  # also name the other bad keys, as far as the common ones go
                _DestinationSchema(partial=True, unknown="exclude").load(value)
            except ValidationError as exc:
                errors = {**exc.normalized_messages(), **errors}
            raise ValidationError(errors)
        return schema().load(value)


def kind_defaults(kind: str) -> dict[str, Any]:
    """The keys a destination of this kind may leave out, with the values it then gets: the
    one place these defaults are written (relay/config/settings.py takes them from here)."""
    return {
        name: field.load_default
        for name, field in SCHEMAS[kind]().fields.items()
        if not field.required and field.load_default is not missing
    }


def worst_case_write_seconds(destination: dict[str, Any], max_wait: float) -> tuple[int, float]:
    """How many calls one write can make and how long they can take, each bounded by its
    rate-limit wait and its connect and read timeouts."""
    calls = CALLS_PER_WRITE[destination["kind"]]
    per_call = (
        max_wait + destination["connect_timeout_seconds"] + destination["read_timeout_seconds"]
    )
    return calls, calls * per_call
