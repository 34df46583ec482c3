"""`kind = "pipedrive"`: Pipedrive webhooks, v2 and v1 (docs/reference/sources/pipedrive.md).

Pipedrive does not sign: it sends `Authorization: Basic` with the `http_auth_user` /
`http_auth_password` set on the webhook (docs/reference/sources/pipedrive.md#authentication),
compared in constant time against the configured `username` and every active secret
(`auth.check_basic`).

Duplicates (docs/reference/sources/pipedrive.md#duplicates):
- v2: `meta.id`, the id of the event that triggered the webhook; a retry resends it with a
  higher `meta.attempt`.
- v1: `meta.id` is the *object's* id (every later change of the same person has it too), so
  it cannot be the event id. The event is `meta.webhook_id` + `event` + object id +
  `meta.timestamp_micro` (the change's time in microseconds); that a retry keeps
  `timestamp_micro` is UNVERIFIED (docs/reference/sources/pipedrive.md#retries), and if it did not,
  a retry would record the same decision twice, which is harmless.

Handled: a person created or changed (v2 `create.person`/`change.person`, v1
`added.person`/`updated.person`). Deleting a person is not a withdrawal, and the other
objects (deal, lead, organization...) carry no person's address: ignored with the reason.
Answers are the person's top-level fields (e.g. `marketing_status`) and the custom fields by
their 40-character hash key: v1 has them at the top level; v2 under `custom_fields` as
`{"type", "value"}` (a single option as `{"id"}`, several as `{"values": [{"id"}]}`), offered
as the value or option id(s). Which consent field the account uses is UNVERIFIED
(docs/reference/sources/pipedrive.md#payload). The address is the primary entry of `emails` (v2) or
`email` (v1), a key that differs between versions (UNVERIFIED,
docs/reference/sources/pipedrive.md#payload: both are read); it is also offered as the answer
`email`.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

from schemas.sources import KIND_VARIABLES
from service.sources.auth import check_basic
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    PayloadError,
    SignedRequest,
    SourceEvent,
    epoch_millis,
    ignored_type,
    parse_time,
)
from service.sources.payloads import json_object, read_json

MAX_EVENT_ID = 255  # the ledger's delivery_id column
HANDLED = ("create.person", "change.person", "added.person", "updated.person")
PERSON_IGNORED = {
    "delete.person": "A deleted person carries no consent answer (deleting is not a withdrawal).",
    "deleted.person": "A deleted person carries no consent answer (deleting is not a withdrawal).",
    "merged.person": "A v1 merge is not a consent change; the kept person's update carries it.",
}
OTHER_OBJECTS = (
    "activity",
    "deal",
    "lead",
    "note",
    "organization",
    "pipeline",
    "product",
    "stage",
    "user",
)
ACTIONS = ("create", "change", "delete", "added", "updated", "deleted", "merged")


def _events() -> dict[str, str | None]:
    """The explicit table: every object type Pipedrive sends (v2 and v1 action names)."""
    table: dict[str, str | None] = dict.fromkeys(HANDLED)
    table.update(PERSON_IGNORED)
    for obj in OTHER_OBJECTS:
        reason = f"Only person events carry an address and consent; {obj} events are ignored."
        table.update({f"{action}.{obj}": reason for action in ACTIONS})
    return table


@dataclass(frozen=True)
class _Delivery:
    """What v1 and v2 share once read: the event and the person as of the change."""

    event_id: str
    event_type: str
    action: Any
    person_id: Any
    person: Any


class PipedriveKind(BaseKind):
    name: ClassVar[str] = "pipedrive"
    EVENTS: ClassVar[Mapping[str, str | None]] = _events()
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "person:{person_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["pipedrive"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        check_basic(request, self.source.options["username"], self.secrets)
        return Authenticated()

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        payload = json_object(read_json(request))
        meta = json_object(payload.get("meta"), "meta")
        delivery = _read_v1(payload, meta) if _is_v1(payload, meta) else _read_v2(payload, meta)
        event_id, event_type = delivery.event_id, delivery.event_type
        reason = ignored_type(self, event_type)
        if reason is not None:
            return [SourceEvent(event_id, event_type, ignored=reason)]
        if not isinstance(delivery.person, dict):
            return [SourceEvent(event_id, event_type, ignored="The delivery has no person data.")]
        answers, email = _answers(delivery.person)
        variables = {
            "person_id": delivery.person_id,
            "company_id": meta.get("company_id"),
            "webhook_id": meta.get("webhook_id"),
            "event_id": event_id,
            "action": delivery.action,
        }
        occurred = _occurred_at(meta)
        return [SourceEvent(event_id, event_type, email, answers, variables, occurred)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """As Pipedrive calls: Basic auth with `http_auth_user` / `http_auth_password`."""
        pair = f"{self.source.options['username']}:{self.secrets[0]}".encode()
        headers = {
            "Content-Type": content_type,
            "Authorization": "Basic " + base64.b64encode(pair).decode(),
        }
        return SignedRequest(url, headers, body)


def _is_v1(payload: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    """v1 has `"v": 1` and `meta.object`; v2 has `meta.version` "2.0" and `meta.entity`."""
    return (
        payload.get("v") == 1 or meta.get("v") == 1 or ("object" in meta and "entity" not in meta)
    )


def _read_v2(payload: Mapping[str, Any], meta: Mapping[str, Any]) -> _Delivery:
    event_id = meta.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
        raise PayloadError("A Pipedrive v2 delivery has a string meta.id.")
    event_type = f"{meta.get('action')}.{meta.get('entity')}"
    person = payload.get("data")
    person_id = meta.get("entity_id") or (person.get("id") if isinstance(person, dict) else None)
    return _Delivery(event_id, event_type, meta.get("action"), person_id, person)


def _read_v1(payload: Mapping[str, Any], meta: Mapping[str, Any]) -> _Delivery:
    webhook_id, micro = meta.get("webhook_id"), meta.get("timestamp_micro")
    if webhook_id in (None, "") or not _is_integer(micro):
        raise PayloadError("A Pipedrive v1 delivery has meta.webhook_id and timestamp_micro.")
    event = payload.get("event")
    event_type = event if isinstance(event, str) else f"{meta.get('action')}.{meta.get('object')}"
    person = payload.get("current")
    person_id = meta.get("id") or (person.get("id") if isinstance(person, dict) else None)
    event_id = f"v1:{webhook_id}:{event_type}:{person_id}:{micro}"
    if len(event_id) > MAX_EVENT_ID:
        raise PayloadError("The Pipedrive v1 event id is too long.")
    return _Delivery(event_id, event_type, meta.get("action"), person_id, person)


def _answers(person: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Top-level fields, v2 custom fields unwrapped by hash key, and the primary address."""
    answers = {key: value for key, value in person.items() if key != "custom_fields"}
    custom = person.get("custom_fields")
    if isinstance(custom, dict):
        answers.update({key: _custom_value(value) for key, value in custom.items()})
    email = _primary_email(person.get("emails")) or _primary_email(person.get("email"))
    answers["email"] = email
    return answers, email


def _custom_value(value: Any) -> Any:
    """v2 custom field objects: `{"type", "value"}` -> value; a single option `{"id"}` -> its
    id; several options `{"values": [{"id"}]}` -> their ids (option ids, not labels: the
    webhook carries no labels, so the mapping's `values` names the ids)."""
    if not isinstance(value, dict):
        return value
    if "value" in value:
        return value["value"]
    if "id" in value:
        return value["id"]
    if isinstance(value.get("values"), list):
        return [item.get("id") for item in value["values"] if isinstance(item, dict)]
    return value


def _primary_email(entries: Any) -> str | None:
    """The primary entry of `[{"value", "primary", "label"}]`, else the first non-empty one."""
    if isinstance(entries, str):
        return entries.strip() or None
    if not isinstance(entries, list):
        return None
    items = [item for item in entries if isinstance(item, dict)]
    for item in sorted(items, key=lambda item: item.get("primary") is not True):
        value = item.get("value")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _occurred_at(meta: Mapping[str, Any]) -> dt.datetime | None:
    """v2 `meta.timestamp` is ISO 8601 in the examples (some entities send epoch seconds);
    v1 has epoch seconds and `timestamp_micro`."""
    timestamp = meta.get("timestamp")
    parsed = parse_time(timestamp)
    if parsed is not None:
        return parsed
    micro = meta.get("timestamp_micro")
    if _is_integer(micro):
        return epoch_millis(micro // 1000)
    if _is_integer(timestamp):
        return epoch_millis(timestamp * 1000)
    return None


def _is_integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
