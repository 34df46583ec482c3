"""`kind = "typeform"`: Typeform webhooks (docs/reference/sources/typeform.md).

Signature: `Typeform-Signature: sha256=<base64 HMAC-SHA256 of the raw body>` with the secret
set on the webhook. No timestamp is signed, so duplicates are recognised by `event_id`.
Typeform disables a webhook on 404 or 410, so every signed delivery we cannot use is
answered 200 `ignored` (docs/reference/senders.md#answers-have-side-effects).

Answers are keyed by the field's `ref` (stable, set in the form editor; the docs recommend
matching on it) and by its `id`; hidden fields as `hidden.<name>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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
from service.sources.shapes import optional_list, optional_object, optional_text

HEADER = "typeform-signature"
PREFIX = "sha256="


def signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return PREFIX + base64.b64encode(digest).decode()


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> None:
    offered = headers.get(HEADER)
    if not offered:
        raise SignatureError("Missing Typeform-Signature header.")
    if not offered.startswith(PREFIX):
        raise SignatureError("Malformed Typeform-Signature header.")
    require_signature(offered, (signature(secret, body) for secret in secrets))


class TypeformKind(BaseKind):
    name: ClassVar[str] = "typeform"
    EVENTS: ClassVar[Mapping[str, str | None]] = {
        "form_response": None,
        "form_response_partial": "A partial response is not a submission.",
    }
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{form_id}:{response_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["typeform"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        verify(request.headers, request.body, self.secrets)
        return Authenticated()

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        payload = json_object(read_json(request))
        event_id, event_type = payload.get("event_id"), payload.get("event_type")
        if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
            raise PayloadError("A Typeform delivery has a string event_id and event_type.")
        reason = ignored_type(self, event_type)
        if reason is not None:
            return [SourceEvent(event_id, event_type, ignored=reason)]
        response = json_object(payload.get("form_response"), "form_response")
        definition = optional_object(response.get("definition"), "form_response.definition")
        answers, email = _answers(response, definition)
        variables = {
            "form_id": response.get("form_id"),
            "form_title": definition.get("title"),
            "response_id": response.get("token"),
            "event_id": event_id,
        }
        occurred = parse_time(response.get("submitted_at"))
        return [SourceEvent(event_id, event_type, email, answers, variables, occurred)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        headers = {
            "Content-Type": content_type,
            "Typeform-Signature": signature(self.secrets[0], body),
        }
        return SignedRequest(url, headers, body)


def _answers(
    response: dict[str, Any], definition: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """Answers by field ref and id, hidden fields by `hidden.<name>`, and the first e-mail."""
    where = "form_response.definition.fields"
    refs = {
        optional_text(f.get("id"), f"{where}[{i}].id"): f.get("ref")
        for i, f in enumerate(optional_list(definition.get("fields"), where))
        if isinstance(f, dict)
    }
    answers: dict[str, Any] = {}
    email = None
    for i, answer in enumerate(optional_list(response.get("answers"), "form_response.answers")):
        if not isinstance(answer, dict) or not isinstance(answer.get("field"), dict):
            continue
        value = _value(answer, f"form_response.answers[{i}]")
        field = answer["field"]
        field_id = optional_text(field.get("id"), f"form_response.answers[{i}].field.id")
        for key in (field.get("ref") or refs.get(field_id), field_id):
            if isinstance(key, str) and key:
                answers[key] = value
        if answer.get("type") == "email" and email is None and isinstance(value, str):
            email = value
    for name, value in optional_object(response.get("hidden"), "form_response.hidden").items():
        answers[f"hidden.{name}"] = value
    return answers, email


def _value(answer: dict[str, Any], path: str) -> Any:
    """The answer's value: `{"type": "boolean", "boolean": true}` -> True; a choice -> its
    label; several choices -> their labels."""
    value = answer.get(str(answer.get("type")))
    if isinstance(value, dict):
        if "label" in value:
            return value["label"]
        if "labels" in value:
            labels = optional_list(value["labels"], f"{path}.{answer.get('type')}.labels")
            return labels + ([value["other"]] if value.get("other") else [])
    return value
