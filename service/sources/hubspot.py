"""`kind = "hubspot"`: HubSpot workflow webhooks
(docs/reference/sources/hubspot.md#workflow-webhooks) and Webhooks API events
(docs/reference/sources/hubspot.md#webhooks-api).

Authentication is a HubSpot request signature, v1, v2 or v3 (`hubspot_signature.py`), with
the app's client secret; config `signature_versions` restricts the accepted versions and
config `url` is the URL as pasted at HubSpot (v2 and v3 sign it; behind a proxy the URL we
see differs). HubSpot stops retrying on most 4xx
(docs/reference/senders.md#answers-have-side-effects), so a signed delivery we cannot use is
answered 200 with each event ignored and its reason recorded.

Two bodies arrive at the same endpoint:

- A JSON array: Webhooks API events (docs/reference/sources/hubspot.md#webhooks-api-events), one
  SourceEvent per element, recognised as a redelivery by `eventId`. They carry no e-mail address,
  only `objectId`: a `contact.propertyChange` of the consent property is ignored with that
  reason, because we do not look contacts up (use a workflow webhook for consent). Other types
  are ignored (EVENTS), except `contact.privacyDeletion` when `erase_on_privacy_deletion` is
  set: that erases the ledger contact(s) of this object's decisions
  (service/intake/erasures.py).
- A JSON object: the contact a workflow "Send a webhook" action posts
  (docs/reference/sources/hubspot.md#workflow-payload), legacy shape (`vid`,
  `properties.<name>.value` with `versions`, `form-submissions`) or flat shape (`objectId`,
  `properties.<name>` = value; UNVERIFIED, no captured example). Answers are the properties by
  internal name; the e-mail is `properties.email`.

A workflow webhook has no delivery id (docs/reference/sources/hubspot.md#workflow-duplicates), so
one is derived, `vid:<id>:<change>`, where the change is the consent property's last change time
(legacy `versions`), else
`lastmodifieddate`, else the body's SHA-256. Not the latest form `conversion-id`, which
docs/reference/sources/hubspot.md#workflow-duplicates suggests: a workflow re-enrolled by a later
consent change carries the same latest form submission, and would be taken for a redelivery and
lost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from schemas.sources import KIND_VARIABLES
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
from service.sources.hubspot_signature import VERSIONS, SignedParts, signed_headers, verify
from service.sources.payloads import read_json
from service.sources.shapes import optional_list

PROPERTY_CHANGE = "contact.propertyChange"
PRIVACY_DELETION = "contact.privacyDeletion"
WORKFLOW_CONTACT = "workflow.contact"  # our label: a workflow webhook names no event type
NOT_CONSENT = "A {} event is not a consent decision."
NO_EMAIL_IN_API_EVENTS = (
    "A Webhooks API {} event carries no e-mail address (only objectId {}) and the relay "
    "does not look contacts up: send consent with a workflow 'Send a webhook' action."
)
MAX_EVENT_ID = 255  # the ledger's delivery_id column
OBJECT_ID_KEYS = ("objectId", "vid", "canonical-vid", "id")
PORTAL_ID_KEYS = ("portalId", "portal-id")
MODIFIED_KEYS = ("lastmodifieddate", "hs_lastmodifieddate")


class HubspotKind(BaseKind):
    name: ClassVar[str] = "hubspot"
    EVENTS: ClassVar[Mapping[str, str | None]] = {
        WORKFLOW_CONTACT: None,
        PROPERTY_CHANGE: None,
        "contact.creation": (
            "A contact.creation event carries neither an e-mail address nor a consent answer."
        ),
        "contact.deletion": NOT_CONSENT.format("contact.deletion"),
        "contact.privacyDeletion": NOT_CONSENT.format("contact.privacyDeletion"),
        "contact.merge": NOT_CONSENT.format("contact.merge"),
        "contact.restore": NOT_CONSENT.format("contact.restore"),
        "contact.associationChange": NOT_CONSENT.format("contact.associationChange"),
    }
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{object_id}:{change_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["hubspot"]

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self.source.options.get("signature_versions") or VERSIONS)

    @property
    def erases(self) -> bool:
        """A privacy deletion erases the person (docs/sources/hubspot.md#privacy-deletion)."""
        return bool(self.source.options.get("erase_on_privacy_deletion"))

    def signed_url(self, received_url: str) -> str:
        """The URL HubSpot signed: as configured at HubSpot, else as received."""
        return str(self.source.options.get("url") or received_url)

    def authenticate(self, request: InboundRequest) -> Authenticated:
        parts = SignedParts(request.method.upper(), self.signed_url(request.url), request.body)
        now = request.received_at or time.time()
        timestamp = verify(request.headers, parts, self.secrets, self.versions, self.tolerance, now)
        return Authenticated(timestamp=None if timestamp is None else timestamp // 1000)

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        payload = read_json(request)
        if isinstance(payload, list) and payload:
            return [
                self._api_event(item, index, request.body) for index, item in enumerate(payload)
            ]
        if isinstance(payload, dict):
            return [self._workflow_event(payload, request.body)]
        raise PayloadError("A HubSpot delivery is a non-empty array of events or a contact object.")

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """Signed with the strongest accepted version, as HubSpot would call `url`."""
        version = next(v for v in reversed(VERSIONS) if v in self.versions)
        parts = SignedParts("POST", self.signed_url(url), body)
        headers = {"Content-Type": content_type}
        headers.update(signed_headers(self.secrets[0], version, parts, now))
        return SignedRequest(url, headers, body)

    # --- Webhooks API events (docs/reference/sources/hubspot.md#webhooks-api)
    # --------------------------------------------------------

    def _api_event(self, item: Any, index: int, body: bytes) -> SourceEvent:
        event_id = _text_id(item.get("eventId")) if isinstance(item, dict) else None
        if event_id is None:
            # Still recorded as ignored, under an id that recognises the same body again.
            derived = f"sha256:{_digest(body)}:{index}"
            why = "An event without an eventId is not a HubSpot Webhooks API event."
            return SourceEvent(derived, "unknown", ignored=why)
        event_type = item.get("subscriptionType")
        event_type = event_type if isinstance(event_type, str) and event_type else "unknown"
        variables = {
            "object_id": _text_id(item.get("objectId")),
            "portal_id": _text_id(item.get("portalId")),
            "subscription_type": event_type,
            "event_id": event_id,
            "change_id": event_id,
        }
        occurred = epoch_millis(item.get("occurredAt"))
        if event_type == PRIVACY_DELETION and self.erases and variables["object_id"]:
            return SourceEvent(
                event_id,
                event_type,
                None,
                {},
                variables,
                occurred,
                erase_object=variables["object_id"],
            )
        reason = self._api_event_ignored(item, event_type)
        answers = {k: v for k, v in item.items() if not isinstance(v, dict | list)}
        if reason is None:
            answers[str(item["propertyName"])] = item.get("propertyValue")
            reason = self._no_email(answers, event_type, variables["object_id"])
        return SourceEvent(event_id, event_type, None, answers, variables, occurred, ignored=reason)

    def _api_event_ignored(self, item: Mapping[str, Any], event_type: str) -> str | None:
        if event_type != PROPERTY_CHANGE:
            return ignored_type(self, event_type) or f"{event_type!r} is not a Webhooks API event."
        consent = self.source.effective_mapping.consent
        name = item.get("propertyName")
        if name != consent:
            return f"Property {name!r} is not the mapped consent property {consent!r}."
        return None

    def _no_email(self, answers: Mapping[str, Any], event_type: str, object_id: Any) -> str | None:
        """Why the event cannot be used: none of HubSpot's event fields is an address."""
        email_key = self.source.effective_mapping.email
        found = answers.get(email_key) if email_key else None
        if isinstance(found, str) and found.strip():
            return None
        return NO_EMAIL_IN_API_EVENTS.format(event_type, object_id)

    # --- workflow "Send a webhook" contacts (docs/reference/sources/hubspot.md#workflow-webhooks)
    # -----------------------------------------

    def _workflow_event(self, contact: Mapping[str, Any], body: bytes) -> SourceEvent:
        raw_properties = contact.get("properties")
        raw_properties = raw_properties if isinstance(raw_properties, dict) else {}
        answers = {k: v for k, v in contact.items() if not isinstance(v, dict | list)}
        answers.update(_property_values(raw_properties))
        object_id = _first_id(contact, OBJECT_ID_KEYS) or _text_id(answers.get("hs_object_id"))
        if object_id is None or not raw_properties:
            reason = "A workflow webhook must send the contact (vid or objectId, and properties)."
            return SourceEvent(f"sha256:{_digest(body)}", WORKFLOW_CONTACT, ignored=reason)
        consent = self.source.effective_mapping.consent
        consent_changed = _last_change(raw_properties.get(consent), f"properties.{consent}")
        change_id = _change_id(consent_changed, answers, body)
        submission = _latest_submission(contact.get("form-submissions"))
        variables = _workflow_variables(contact, submission, object_id, change_id)
        occurred = (
            epoch_millis(consent_changed)
            or _modified_time(answers)
            or epoch_millis(submission.get("timestamp"))
            or epoch_millis(contact.get("occurredAt"))
        )
        event_id = variables["event_id"]
        email = answers.get("email")
        return SourceEvent(event_id, WORKFLOW_CONTACT, email, answers, variables, occurred)


def _workflow_variables(
    contact: Mapping[str, Any], submission: Mapping[str, Any], object_id: str, change_id: str
) -> dict[str, Any]:
    portal_id = _first_id(contact, PORTAL_ID_KEYS) or _text_id(submission.get("portal-id"))
    return {
        "object_id": object_id,
        "portal_id": portal_id,
        "form_id": submission.get("form-id"),
        "conversion_id": submission.get("conversion-id"),
        "subscription_type": None,
        "event_id": _bounded(f"vid:{object_id}:{change_id}"),
        "change_id": change_id,
    }


def _property_values(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Legacy `{"name": {"value": v, "versions": [...]}}` and flat `{"name": v}` alike."""
    values: dict[str, Any] = {}
    for name, entry in properties.items():
        if isinstance(entry, dict):
            if "value" in entry:
                values[name] = entry["value"]
        elif not isinstance(entry, list):
            values[name] = entry
    return values


def _last_change(entry: Any, path: str) -> int | None:
    """When a legacy property last changed: the latest of its `versions[].timestamp` (ms)."""
    versions = entry.get("versions") if isinstance(entry, dict) else None
    times = [
        version["timestamp"]
        for version in optional_list(versions, f"{path}.versions")
        if isinstance(version, dict) and _is_int(version.get("timestamp"))
    ]
    return max(times, default=None)


def _change_id(consent_changed: int | None, answers: Mapping[str, Any], body: bytes) -> str:
    if consent_changed is not None:
        return f"consent-{consent_changed}"
    modified = next((answers[k] for k in MODIFIED_KEYS if _text_id(answers.get(k))), None)
    if modified is not None:
        return f"modified-{modified}"
    return f"sha256-{_digest(body)}"


def _modified_time(answers: Mapping[str, Any]) -> Any:
    """`lastmodifieddate`: milliseconds in the legacy shape, ISO 8601 in the flat one."""
    for key in MODIFIED_KEYS:
        value = answers.get(key)
        found = epoch_millis(value) if str(value).isdigit() else parse_time(value)
        if found is not None:
            return found
    return None


def _latest_submission(submissions: Any) -> Mapping[str, Any]:
    """The most recent `form-submissions` entry (by timestamp; the order is not documented)."""
    if not isinstance(submissions, list):
        return {}
    entries = [entry for entry in submissions if isinstance(entry, dict)]
    return max(entries, key=_submission_time, default={})


def _submission_time(submission: Mapping[str, Any]) -> int:
    timestamp = submission.get("timestamp")
    return timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else -1


def _first_id(payload: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((found for key in keys if (found := _text_id(payload.get(key)))), None)


def _text_id(value: Any) -> str | None:
    """An id as text: an integer, or a short non-empty string."""
    if _is_int(value):
        return str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_EVENT_ID:
        return value.strip()
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded(event_id: str) -> str:
    """At most MAX_EVENT_ID characters (a long `lastmodifieddate` would not fit the ledger)."""
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
