"""Schemas for `consent-relay.toml`. Every error names the key it is about.

Unknown keys are rejected so that a typo (`secret` for `secrets`) stops start-up instead of
silently running without the intended setting.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from schemas.base import StrictSchema
from schemas.destinations import DestinationField, worst_case_write_seconds
from schemas.notifications import NotificationsSchema
from schemas.sources import (  # noqa: F401 (re-exported: the config's public names)
    MIN_SECRET_BYTES,
    SOURCE_KINDS,
    SourceSchema,
    decode_whsec,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MIN_ADMIN_TOKEN_CHARS = 32
MIN_PASSWORD_CHARS = 12
# A worker waits at most this long for its rate-limit slot; past it, the write is deferred.
MAX_RATE_LIMIT_WAIT_SECONDS = 5.0


# Room for the ledger writes around the HTTP calls, and for Celery's hard time limit.
LEASE_MARGIN_SECONDS = 30


class ServiceSchema(StrictSchema):
    port = fields.Integer(load_default=8000, validate=validate.Range(min=1, max=65535))
    database_url = fields.String(load_default=None, allow_none=True)
    broker_url = fields.String(load_default=None, allow_none=True)
    data_dir = fields.String(load_default="var")
    max_body_bytes = fields.Integer(load_default=1024 * 1024, validate=validate.Range(min=1024))
    timestamp_tolerance_seconds = fields.Integer(load_default=300, validate=validate.Range(min=1))
    max_future_skew_seconds = fields.Integer(load_default=300, validate=validate.Range(min=0))
    queue = fields.String(load_default="consent-relay", validate=validate.Regexp(NAME_PATTERN))
    log_level = fields.String(
        load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"])
    )
    # How many reverse proxies in front of the web process to believe about the client's
    # address and scheme (X-Forwarded-For, X-Forwarded-Proto); 0: none, the headers are ignored.
    trusted_proxies = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10))


class DeliverySchema(StrictSchema):
    sweep_interval_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.2))
    redispatch_after_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=1))
    lease_seconds = fields.Integer(load_default=180, validate=validate.Range(min=10))
    # Transient failures (5xx, 408, timeouts): the waits in order, the last one repeating.
    retry_schedule_seconds = fields.List(
        fields.Float(validate=validate.Range(min=0.1)),
        load_default=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0],
        validate=validate.Length(min=1),
    )
    max_retry_age_seconds = fields.Float(load_default=72 * 3600.0, validate=validate.Range(min=1))
    max_rejected_attempts = fields.Integer(load_default=3, validate=validate.Range(min=1))
    rejected_retry_seconds = fields.Float(load_default=60.0, validate=validate.Range(min=0.1))
    not_visible_retry_seconds = fields.Float(load_default=2.0, validate=validate.Range(min=0.1))
    rate_limited_retry_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=0.1))
    probe_interval_seconds = fields.Float(load_default=60.0, validate=validate.Range(min=0.2))
    sweep_batch_size = fields.Integer(load_default=500, validate=validate.Range(min=1))


class VerificationSchema(StrictSchema):
    """Read-back verification (workers/verification/): after a write, and then every
    `interval_seconds`, read each delivered decision back from the destination."""

    enabled = fields.Boolean(load_default=True)
    # Wait this long after a write before reading it back: Engage stores writes
    # asynchronously (docs/reference/engage.md#endpoints), so an immediate read may not show it.
    after_write_seconds = fields.Float(load_default=60.0, validate=validate.Range(min=0.1))
    # Read every delivered decision back again this often (a day by default).
    interval_seconds = fields.Float(load_default=86400.0, validate=validate.Range(min=1))


class TracingSchema(StrictSchema):
    """OpenTelemetry traces (relay/telemetry/tracing.py), exported over OTLP/HTTP when enabled:
    one trace per decision, from the webhook to each destination's HTTP call."""

    enabled = fields.Boolean(load_default=False)
    # The collector's OTLP/HTTP traces endpoint (the OTLP default port for HTTP is 4318).
    endpoint = fields.String(
        load_default="http://127.0.0.1:4318/v1/traces",
        validate=validate.URL(schemes={"http", "https"}, require_tld=False),
    )
    service_name = fields.String(load_default="consent-relay", validate=validate.Length(min=1))
    # Finished spans are sent in batches at most this long after they end.
    export_delay_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.05, max=60))


class AdminSchema(StrictSchema):
    # Bearer tokens for /admin; several at once so that a token can be rotated.
    tokens = fields.List(
        fields.String(validate=validate.Length(min=MIN_ADMIN_TOKEN_CHARS)), load_default=list
    )
    # The operator page (/ops) login; no password means the page is off.
    username = fields.String(load_default="admin", validate=validate.Length(min=1, max=64))
    password = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=MIN_PASSWORD_CHARS)
    )


class MetricsSchema(StrictSchema):
    # /metrics needs `Authorization: Bearer <token>`; no token means /metrics is off.
    token = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=MIN_ADMIN_TOKEN_CHARS)
    )


class FlowerSchema(StrictSchema):
    port = fields.Integer(load_default=5555, validate=validate.Range(min=1, max=65535))
    # Flower takes its credentials as "user:password" pairs separated by commas, and basic
    # auth cannot carry a ":" in a user name: both would break the login, so refuse them here.
    username = fields.String(
        load_default="admin",
        validate=[
            validate.Length(min=1, max=64),
            validate.ContainsNoneOf(":,", error='Must not contain ":" or ",".'),
        ],
    )
    # Flower's basic auth; no password means `run` does not start Flower.
    password = fields.String(
        load_default=None,
        allow_none=True,
        validate=[
            validate.Length(min=MIN_PASSWORD_CHARS),
            validate.ContainsNoneOf(",", error='Must not contain ",".'),
        ],
    )


class PrivacySchema(StrictSchema):
    # Erasure keeps an HMAC-SHA-256 of the address under this key (relay/ledger/erasure.py):
    # only its holder can link a later decision to the erased person. None: no pseudonym.
    # Put it in the environment (${VAR} in the file) and keep it apart from the database.
    pseudonym_key = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=MIN_ADMIN_TOKEN_CHARS)
    )
    # A Fernet key (32 bytes, URL-safe base64: 44 characters) for the kept bodies of ignored
    # events ([retention] keep_ignored_bodies_days). From the environment, never the database.
    ignored_bodies_key = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_-]{43}=$", error="Must be a Fernet key."),
    )
    # A Fernet key for the address an erasure keeps, encrypted, until each destination with
    # `erase_at_destination` has been asked to delete the person (relay/ledger/
    # destination_erasures.py); required by that option. From the environment, never the database.
    destination_erasure_key = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_-]{43}=$", error="Must be a Fernet key."),
    )


class RetentionSchema(StrictSchema):
    # How long rows that are not the proof of a decision are kept, in days; 0 keeps them for
    # good. Decisions, chain links, erasures and audit entries are never pruned (consent is
    # evidence for as long as it is relied on: docs/data-protection.md#retention).
    delivery_attempts_days = fields.Integer(load_default=0, validate=validate.Range(min=0))
    ignored_events_days = fields.Integer(load_default=90, validate=validate.Range(min=0))
    resolved_dead_letters_days = fields.Integer(load_default=365, validate=validate.Range(min=0))
    superseded_deliveries_days = fields.Integer(load_default=0, validate=validate.Range(min=0))
    # Small batches, each its own short transaction, so intake and delivery are not held up.
    batch_size = fields.Integer(load_default=500, validate=validate.Range(min=1, max=10000))
    max_batches = fields.Integer(load_default=200, validate=validate.Range(min=1))
    interval_seconds = fields.Float(load_default=3600.0, validate=validate.Range(min=1))
    # Keep the raw body of an ignored event this many days, encrypted with [privacy]
    # ignored_bodies_key, so that it can be reprocessed after a mapping fix; 0: not kept.
    keep_ignored_bodies_days = fields.Integer(load_default=0, validate=validate.Range(min=0))
    # A failed erasure at a destination keeps the person's identifier sealed for an operator's
    # retry; this many days after it failed, retention acknowledges it and wipes the seal (0:
    # only an operator does). 30: a month to notice and fix the cause (docs/data-protection.md
    # #failed-at-destination), not longer than needed (GDPR Art. 5(1)(e)).
    failed_destination_erasures_days = fields.Integer(
        load_default=30, validate=validate.Range(min=0)
    )


class ConfigFileSchema(StrictSchema):
    service = fields.Nested(ServiceSchema, load_default=lambda: ServiceSchema().load({}))
    delivery = fields.Nested(DeliverySchema, load_default=lambda: DeliverySchema().load({}))
    verification = fields.Nested(
        VerificationSchema, load_default=lambda: VerificationSchema().load({})
    )
    tracing = fields.Nested(TracingSchema, load_default=lambda: TracingSchema().load({}))
    admin = fields.Nested(AdminSchema, load_default=lambda: AdminSchema().load({}))
    metrics = fields.Nested(MetricsSchema, load_default=lambda: MetricsSchema().load({}))
    flower = fields.Nested(FlowerSchema, load_default=lambda: FlowerSchema().load({}))
    privacy = fields.Nested(PrivacySchema, load_default=lambda: PrivacySchema().load({}))
    retention = fields.Nested(RetentionSchema, load_default=lambda: RetentionSchema().load({}))
    notifications = fields.Nested(
        NotificationsSchema, load_default=lambda: NotificationsSchema().load({})
    )
    sources = fields.Dict(
        keys=fields.String(validate=validate.Regexp(NAME_PATTERN)),
        values=fields.Nested(SourceSchema),
        required=True,
        validate=validate.Length(min=1),
    )
    destinations = fields.Dict(
        keys=fields.String(validate=validate.Regexp(NAME_PATTERN)),
        values=DestinationField(),  # the schema of each destination's kind: schemas/destinations.py
        required=True,
        validate=validate.Length(min=1),
    )

    @validates_schema
    def _kept_bodies_have_a_key(self, data: dict[str, Any], **_: Any) -> None:
        if (
            data["retention"]["keep_ignored_bodies_days"]
            and not data["privacy"]["ignored_bodies_key"]
        ):
            raise ValidationError(
                "Set [privacy] ignored_bodies_key to keep bodies (they are encrypted).",
                "retention",
            )

    @validates_schema
    def _destination_erasures_have_a_key(self, data: dict[str, Any], **_: Any) -> None:
        # Without a key the address would wait for the vendor call in clear text (in the
        # ledger or the broker): refused rather than weakened (docs/data-protection.md).
        erasing = sorted(n for n, d in data["destinations"].items() if d["erase_at_destination"])
        if erasing and not data["privacy"]["destination_erasure_key"]:
            raise ValidationError(
                "Set [privacy] destination_erasure_key (a Fernet key): "
                f"erase_at_destination is on for {', '.join(erasing)}.",
                "privacy",
            )

    @validates_schema
    def _lease_outlasts_writes(self, data: dict[str, Any], **_: Any) -> None:
        """A write (Engage: update, create, update) must end before the lease can pass to another
        worker, or two writers could overlap and an older decision land last.

        Runs only when every field loaded (marshmallow's skip_on_field_errors), so the
        defaults are already filled in by the fields' load_default."""
        lease = data["delivery"]["lease_seconds"]
        for name, dest in data["destinations"].items():
            calls, seconds = worst_case_write_seconds(dest, MAX_RATE_LIMIT_WAIT_SECONDS)
            needed = seconds + LEASE_MARGIN_SECONDS
            if needed > lease:
                raise ValidationError(
                    f"Must be at least {needed:.0f} s: {calls} calls x (rate-limit wait + "
                    f"connect + read timeout) of "
                    f"destinations.{name} plus {LEASE_MARGIN_SECONDS} s.",
                    "delivery.lease_seconds",
                )
