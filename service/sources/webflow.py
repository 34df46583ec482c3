"""`kind = "webflow"`: Webflow form submission webhooks (docs/reference/sources/webflow.md).

Signature: `x-webflow-signature: <hex HMAC-SHA256 of f"{timestamp}:{raw body}">` with
`x-webflow-timestamp` in MILLISECONDS since the epoch
(docs/reference/sources/webflow.md#authentication, docs/reference/sources/webflow.md#replay). The
key is the OAuth app's client secret, or the per-webhook `whsec_...` secret of a webhook created
through the API (docs/reference/sources/webflow.md#authentication, [2nd]); either way the configured
string is the UTF-8 key, as the hookdeck examples use it. Whether Webflow decodes a `whsec_` secret
first is UNVERIFIED. Webhooks created in the site dashboard or with a site token are not signed at
all (docs/reference/sources/webflow.md#authentication): they are refused, because an unsigned
consent change could come from anyone.

The timestamp must be within the source's tolerance both ways (Webflow's docs: 5 min).
Duplicates are recognised by `payload.id`, the submission id
(docs/reference/sources/webflow.md#duplicates). Answers are the
`payload.data` entries, keyed by the field's display name
(docs/reference/sources/webflow.md#payload).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from schemas.sources import KIND_VARIABLES
from service.sources.auth import require_signature
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    PayloadError,
    SignatureError,
    SignedRequest,
    SourceEvent,
    ignored_type,
    parse_time,
)
from service.sources.payloads import json_object, read_json

SIGNATURE_HEADER = "x-webflow-signature"
TIMESTAMP_HEADER = "x-webflow-timestamp"
MAX_TIMESTAMP_DIGITS = 16  # milliseconds; 13 digits today
MAX_EVENT_ID = 255  # the ledger's delivery_id column
# Webflow's default e-mail field name (docs/reference/sources/webflow.md#payload)
EMAIL_KEYS = ("email", "Email")
NOT_A_FORM = "Not a form submission: no consent answer to record."


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 over `{timestamp}:{body}` (docs/reference/sources/webflow.md#authentication);
    the timestamp in milliseconds."""
    signed = str(timestamp).encode() + b":" + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    tolerance_seconds: int,
    now: float,
) -> int:
    """The checked timestamp in milliseconds; fails closed."""
    offered = headers.get(SIGNATURE_HEADER)
    if not offered:
        raise SignatureError(
            "Missing x-webflow-signature header (only webhooks created by an OAuth app or "
            "the API are signed)."
        )
    timestamp = _timestamp(headers.get(TIMESTAMP_HEADER), tolerance_seconds, now)
    expected = (signature(secret, timestamp, body) for secret in secrets)
    require_signature(offered.strip().lower(), expected)
    return timestamp


def _timestamp(value: str | None, tolerance_seconds: int, now: float) -> int:
    if not value:
        raise SignatureError("Missing x-webflow-timestamp header.")
    if not value.isascii() or not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS:
        raise SignatureError("Malformed x-webflow-timestamp header.")
    # Signed as `Number(ts)` in Webflow's docs, so "0123" is signed as "123".
    timestamp = int(value)
    sent = timestamp / 1000  # milliseconds, not seconds (docs/reference/sources/webflow.md#replay)
    if sent < now - tolerance_seconds:
        raise SignatureError("Message timestamp too old.")
    if sent > now + tolerance_seconds:
        raise SignatureError("Message timestamp too new.")
    return timestamp


class WebflowKind(BaseKind):
    name: ClassVar[str] = "webflow"
    # Webflow's other trigger types carry no consent answer; unknown ones get
    # ignored_type()'s reason.
    EVENTS: ClassVar[Mapping[str, str | None]] = {
        "form_submission": None,
        "site_publish": NOT_A_FORM,
        "page_created": NOT_A_FORM,
        "page_metadata_updated": NOT_A_FORM,
        "page_deleted": NOT_A_FORM,
        "ecomm_new_order": NOT_A_FORM,
        "ecomm_order_changed": NOT_A_FORM,
        "ecomm_inventory_changed": NOT_A_FORM,
        "user_account_added": NOT_A_FORM,
        "user_account_updated": NOT_A_FORM,
        "user_account_deleted": NOT_A_FORM,
        "collection_item_created": NOT_A_FORM,
        "collection_item_changed": NOT_A_FORM,
        "collection_item_deleted": NOT_A_FORM,
        "collection_item_unpublished": NOT_A_FORM,
    }
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{form_name}:{submission_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["webflow"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        now = request.received_at or time.time()
        timestamp = verify(request.headers, request.body, self.secrets, self.tolerance, now)
        return Authenticated(timestamp=timestamp // 1000)

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        body = json_object(read_json(request))
        trigger = body.get("triggerType")
        if not isinstance(trigger, str) or not trigger:
            raise PayloadError("A Webflow delivery has a string triggerType.")
        reason = ignored_type(self, trigger)
        if reason is not None:
            event_id = _ignored_event_id(body.get("payload"), request.body)
            return [SourceEvent(event_id, trigger, ignored=reason)]
        payload = json_object(body.get("payload"), "payload")
        submission_id = payload.get("id")
        if not isinstance(submission_id, str) or not 0 < len(submission_id) <= MAX_EVENT_ID:
            raise PayloadError("A Webflow form_submission has a string payload.id.")
        answers = payload.get("data")
        answers = dict(answers) if isinstance(answers, dict) else {}
        variables = {
            "form_name": payload.get("name"),
            "site_id": payload.get("siteId"),
            "submission_id": submission_id,
            # newer payloads only, UNVERIFIED (docs/reference/sources/webflow.md#payload)
            "form_id": payload.get("formId"),
        }
        occurred = parse_time(payload.get("submittedAt"))
        email = _email(answers)
        return [SourceEvent(submission_id, trigger, email, answers, variables, occurred)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        timestamp = int(now * 1000)
        headers = {
            "Content-Type": content_type,
            "x-webflow-timestamp": str(timestamp),
            "x-webflow-signature": signature(self.secrets[0], timestamp, body),
        }
        return SignedRequest(url, headers, body)


def _email(answers: Mapping[str, Any]) -> str | None:
    """`data["email"]` (Webflow's default field name), else a field named email in any case."""
    names = [*EMAIL_KEYS, *(key for key in answers if key.strip().casefold() == "email")]
    for name in names:
        value = answers.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _ignored_event_id(payload: Any, body: bytes) -> str:
    """An ignored trigger's id: its `payload.id` when it has one, else the body's digest
    (a site_publish has no id; the digest still recognises a redelivery)."""
    found = payload.get("id") if isinstance(payload, dict) else None
    if isinstance(found, str) and 0 < len(found) <= MAX_EVENT_ID:
        return found
    return "sha256:" + hashlib.sha256(body).hexdigest()
