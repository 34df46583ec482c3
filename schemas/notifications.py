"""`[notifications]`: operational webhooks the relay sends (docs/operations/notifications.md).

Each target is a URL, a Standard Webhooks secret (`whsec_` + base64, checked like a source's:
schemas/sources.py), the events it wants and the body's format. The relay is the sender: it
signs every message (webhook-id, webhook-timestamp, webhook-signature), the Slack-shaped body
included (https://www.standardwebhooks.com/, https://api.slack.com/messaging/webhooks).
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates

from schemas.base import StrictSchema
from schemas.sources import MIN_SECRET_BYTES, decode_whsec

DESTINATION_PAUSED = "destination.paused"
DESTINATION_RESUMED = "destination.resumed"
DEAD_LETTER_CREATED = "dead_letter.created"
DRIFT_FOUND = "drift.found"
EVENTS = (DESTINATION_PAUSED, DESTINATION_RESUMED, DEAD_LETTER_CREATED, DRIFT_FOUND)
FORMATS = ("standard", "slack")
TARGET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class NotificationTargetSchema(StrictSchema):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    secret = fields.String(required=True)
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENTS)),
        load_default=lambda: list(EVENTS),
        validate=validate.Length(min=1),
    )
    format = fields.String(load_default="standard", validate=validate.OneOf(FORMATS))

    @validates("secret")
    def _whsec(self, value: str, **_: Any) -> None:
        if not value.startswith("whsec_"):
            raise ValidationError("Must be a Standard Webhooks secret (whsec_...).")
        if len(decode_whsec(value)) < MIN_SECRET_BYTES:
            raise ValidationError(f"Secret must decode to at least {MIN_SECRET_BYTES} bytes.")


class NotificationsSchema(StrictSchema):
    enabled = fields.Boolean(load_default=False)
    # Tries per message and target, the first included; then it is recorded as failed.
    max_attempts = fields.Integer(load_default=6, validate=validate.Range(min=1, max=50))
    timeout_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=60))
    # Waits after a 5xx, 408, 429, a timeout or a refused connection; the last one repeats.
    retry_schedule_seconds = fields.List(
        fields.Float(validate=validate.Range(min=0.1)),
        load_default=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0],
        validate=validate.Length(min=1),
    )
    targets = fields.Dict(
        keys=fields.String(validate=validate.Regexp(TARGET_NAME)),
        values=fields.Nested(NotificationTargetSchema),
        load_default=dict,
    )
