"""`kind = "tally"`: Tally form webhooks (docs/reference/sources/tally.md).

Signature: `Tally-Signature: <base64 HMAC-SHA256 of the raw body>`, no prefix, with the
signing secret set in the webhook's settings. Tally's own sample signs
`JSON.stringify(req.body)`, which equals the raw bytes because Tally sends compact JSON
(docs/reference/senders.md#read-the-raw-body-first). No timestamp is signed, so duplicates are
recognised by the body's `eventId`. Tally wants a 2xx within 10 s and retries a failure 5 times (5
min .. 24 h): an event we cannot use is answered 200 `ignored`, never a 4xx
(docs/reference/senders.md#answers-have-side-effects).

Answers are keyed by the field's `key` (`question_xxx`, stable) and by its `label` (what the
operator sees in the editor). The checkbox value formats are UNVERIFIED
(docs/reference/sources/tally.md#payload): a value may be a boolean (one checkbox) or a list of
option ids (a checkbox group); option ids are replaced by their texts when the field lists its
`options`, so operators map by text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeGuard

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
from service.sources.shapes import optional_scalar

HEADER = "tally-signature"
EMAIL_TYPE = "INPUT_EMAIL"
MAX_EVENT_ID = 255  # the ledger's delivery_id column


def signature(secret: str, body: bytes) -> str:
    """The `Tally-Signature` value: base64 of HMAC-SHA256(secret, body), no prefix
    (docs/reference/sources/tally.md#authentication)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> None:
    offered = headers.get(HEADER)
    if not offered:
        # Tally only signs when a secret is set on the webhook
        # (docs/reference/sources/tally.md#authentication): fail closed.
        raise SignatureError("Missing Tally-Signature header.")
    require_signature(offered.strip(), (signature(secret, body) for secret in secrets))


class TallyKind(BaseKind):
    name: ClassVar[str] = "tally"
    # Tally sends one event type (docs/reference/sources/tally.md#payload); anything else gets
    # ignored_type()'s reason.
    EVENTS: ClassVar[Mapping[str, str | None]] = {"FORM_RESPONSE": None}
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{form_id}:{response_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["tally"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        verify(request.headers, request.body, self.secrets)
        return Authenticated()

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        payload = json_object(read_json(request))
        event_id, event_type = payload.get("eventId"), payload.get("eventType")
        if not _is_event_id(event_id) or not isinstance(event_type, str):
            raise PayloadError("A Tally delivery has a string eventId and eventType.")
        reason = ignored_type(self, event_type)
        if reason is not None:
            return [SourceEvent(event_id, event_type, ignored=reason)]
        data = json_object(payload.get("data"), "data")
        answers, email = _answers(data.get("fields"))
        variables = {
            "form_id": data.get("formId"),
            "form_name": data.get("formName"),
            "response_id": data.get("responseId"),
            "submission_id": data.get("submissionId"),
            "respondent_id": data.get("respondentId"),
            "event_id": event_id,
        }
        # The submission time; the delivery's own createdAt when the response has none.
        occurred = parse_time(data.get("createdAt")) or parse_time(payload.get("createdAt"))
        return [SourceEvent(event_id, event_type, email, answers, variables, occurred)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        headers = {
            "Content-Type": content_type,
            "Tally-Signature": signature(self.secrets[0], body),
        }
        return SignedRequest(url, headers, body)


def _is_event_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_EVENT_ID


def _answers(fields: Any) -> tuple[dict[str, Any], str | None]:
    """Answers by field key and by label, and the first INPUT_EMAIL value.

    A label shared by two fields is left out: mapping the consent answer from the wrong
    field would be worse than the recorded "No consent answer" (keys stay unambiguous)."""
    by_key: dict[str, Any] = {}
    by_label: dict[str, list[Any]] = {}
    email = None
    for index, field in enumerate(fields if isinstance(fields, list) else []):
        if not isinstance(field, dict):
            continue
        value = _value(field, f"data.fields[{index}]")
        key, label = field.get("key"), field.get("label")
        if isinstance(key, str) and key:
            by_key[key] = value
        if isinstance(label, str) and label.strip():
            by_label.setdefault(label.strip(), []).append(value)
        if field.get("type") == EMAIL_TYPE and email is None and isinstance(value, str):
            email = value
    answers = {label: values[0] for label, values in by_label.items() if len(values) == 1}
    answers.update(by_key)  # a key wins over a label spelled like it
    return answers, email


def _value(field: dict[str, Any], path: str) -> Any:
    """The field's value, option ids replaced by option texts where `options` lists them
    (UNVERIFIED format, docs/reference/sources/tally.md#payload: booleans and unknown ids pass
    through unchanged)."""
    value = field.get("value")
    options = field.get("options")
    if not isinstance(options, list):
        return value
    texts = {
        optional_scalar(option.get("id"), f"{path}.options[{index}].id"): option.get("text")
        for index, option in enumerate(options)
        if isinstance(option, dict) and isinstance(option.get("text"), str)
    }
    if isinstance(value, list):
        return [texts.get(item, item) if isinstance(item, str) else item for item in value]
    if isinstance(value, str):
        return texts.get(value, value)
    return value
