"""`kind = "salesforce"`: Salesforce Outbound Messages (docs/reference/sources/salesforce.md).

Salesforce cannot sign an outbound message (docs/reference/sources/salesforce.md#authentication), so
two checks stand in, in this order: a long random token in the endpoint URL (`?token=`, compared in
constant time against every active secret; 401), then the message's `OrganizationId` against config
`organization_ids` (401). Between them the body must be a SOAP message we can read (400): DTDs and
entities are refused (defusedxml), as docs/reference/sources/salesforce.md#payload asks. Nothing is
signed and there is no timestamp, so a captured message can be replayed: duplicates are recognised
by each `Notification/Id` (Salesforce itself "can sometimes" deliver a message twice,
docs/reference/sources/salesforce.md#duplicates).

A message carries up to 100 Notifications, each one sObject: one SourceEvent each, answers
keyed by the field's local name (`Email`, `HasOptedOutOfEmail`, `Tracking_Consent__c`).
`HasOptedOutOfEmail` is e-mail opt-out, not tracking consent: map it only knowingly.

Salesforce takes anything but a SOAP `notificationsResponse` with `<Ack>true</Ack>` as a
failure and resends for up to 24 h (docs/reference/senders.md#answers-have-side-effects,
docs/reference/sources/salesforce.md#retries), so every 2xx outcome (accepted, duplicate, ignored)
is answered with exactly that body. Refusals keep the problem answer: Salesforce retries them, which
is what a 503 needs and harmless for a 401/400.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from schemas.sources import KIND_VARIABLES
from service.sources.auth import check_token, matches_any
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    MediaTypeError,
    PayloadError,
    SignatureError,
    SignedRequest,
    SourceEvent,
    ignored_type,
    parse_time,
)
from service.sources.token import with_query

SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
XML_TYPES = ("text/xml", "application/xml")
# docs/reference/sources/salesforce.md#payload, verbatim: the only answer that stops Salesforce from
# resending.
ACK = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
ORGANIZATION_ID = re.compile(r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$")
CASE_SENSITIVE_ID = 15  # an 18-character id is the 15-character one plus a case checksum
MAX_EVENT_ID = 255  # the ledger's delivery_id column
NOT_A_PERSON = "{} is not a person: send Contact or Lead fields in the outbound message."
EMAIL_FIELDS = ("Email", "PersonEmail")  # Lead/Contact; Person Account (UNVERIFIED)


class SalesforceKind(BaseKind):
    name: ClassVar[str] = "salesforce"
    # Event type = the sObject type (`xsi:type="sf:Contact"`).
    EVENTS: ClassVar[Mapping[str, str | None]] = {
        "Contact": None,
        "Lead": None,
        "Account": None,  # a Person Account (`PersonEmail`); a business account has none
        "Opportunity": NOT_A_PERSON.format("An Opportunity"),
        "Case": NOT_A_PERSON.format("A Case"),
        "Task": NOT_A_PERSON.format("A Task"),
        "Event": NOT_A_PERSON.format("An Event"),
        "Campaign": NOT_A_PERSON.format("A Campaign"),
    }
    # sObject/sf:Id (docs/reference/sources/salesforce.md#payload)
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{record_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["salesforce"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        check_token(request, self.secrets, None)
        try:
            notifications = read_notifications(request.body)
        except PayloadError:
            # The token holds: parse() refuses this same body with a 400.
            return Authenticated()
        organization_id = _text(notifications.find(f"{OUTBOUND}OrganizationId"))
        if organization_id is None:
            raise SignatureError("Missing OrganizationId.")
        if not ORGANIZATION_ID.match(organization_id):
            raise SignatureError("Malformed OrganizationId.")
        configured = [
            known[:CASE_SENSITIVE_ID] for known in self.source.options["organization_ids"]
        ]
        if not matches_any(organization_id[:CASE_SENSITIVE_ID], configured):
            raise SignatureError("OrganizationId is not one of this source's organization_ids.")
        return Authenticated()

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        if request.mimetype not in XML_TYPES:
            raise MediaTypeError("The body must be text/xml (SOAP), as Salesforce posts it.")
        notifications = read_notifications(request.body)
        items = notifications.findall(f"{OUTBOUND}Notification")
        if not items:
            raise PayloadError("An outbound message has at least one Notification.")
        message = {
            "organization_id": _text(notifications.find(f"{OUTBOUND}OrganizationId")),
            "action_id": _text(notifications.find(f"{OUTBOUND}ActionId")),
        }
        return [self._event(item, index, message, request.body) for index, item in enumerate(items)]

    def answer(self, outcomes: Sequence[Any]) -> tuple[int, str, bytes] | None:
        return 200, "text/xml; charset=utf-8", ACK

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """Salesforce calls the endpoint URL it was given: the token rides in its query.
        The `SOAPAction` value is UNVERIFIED (docs/reference/sources/salesforce.md#content-type);
        nothing here reads it."""
        headers = {"Content-Type": content_type, "SOAPAction": '""'}
        return SignedRequest(with_query(url, token=self.secrets[0]), headers, body)

    def _event(
        self, item: Element, index: int, message: Mapping[str, Any], body: bytes
    ) -> SourceEvent:
        notification_id = _text(item.find(f"{OUTBOUND}Id"))
        sobject = item.find(f"{OUTBOUND}sObject")
        if notification_id is None or len(notification_id) > MAX_EVENT_ID:
            derived = f"sha256:{hashlib.sha256(body).hexdigest()}:{index}"
            return SourceEvent(derived, "unknown", ignored="A Notification without an Id.")
        if sobject is None:
            return SourceEvent(
                notification_id, "unknown", ignored="A Notification without an sObject."
            )
        object_type = (sobject.get(f"{XSI}type") or "unknown").rpartition(":")[2]
        answers = _fields(sobject)
        variables = {
            **message,
            "object_type": object_type,
            "record_id": answers.get("Id"),
            "notification_id": notification_id,
        }
        email = next((answers[name] for name in EMAIL_FIELDS if answers.get(name)), None)
        occurred = parse_time(answers.get("LastModifiedDate"))
        reason = ignored_type(self, object_type)
        return SourceEvent(
            notification_id, object_type, email, answers, variables, occurred, ignored=reason
        )


def read_notifications(body: bytes) -> Element:
    """The SOAP body's `notifications` element; PayloadError when the body is not a SOAP
    outbound message, or declares a DTD or entities
    (docs/reference/sources/salesforce.md#payload)."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise PayloadError("The body declares a DTD or entities, which are refused.") from None
    except ParseError as exc:
        raise PayloadError(f"The body is not well-formed XML: {exc}") from None
    notifications = root.find(f"{SOAP}Body/{OUTBOUND}notifications")
    if root.tag != f"{SOAP}Envelope" or notifications is None:
        raise PayloadError("The body is not a SOAP envelope with Salesforce notifications.")
    return notifications


def _fields(sobject: Element) -> dict[str, Any]:
    """The sObject's fields by local name (`sf:Email` -> `Email`); `xsi:nil` -> None."""
    fields: dict[str, Any] = {}
    for child in sobject:
        if len(child):
            continue  # a nested element is not a field value we map
        name = child.tag.rpartition("}")[2]
        fields[name] = None if child.get(f"{XSI}nil") == "true" else (child.text or "").strip()
    return fields


def _text(element: Element | None) -> str | None:
    if element is None or element.get(f"{XSI}nil") == "true":
        return None
    text = (element.text or "").strip()
    return text or None
