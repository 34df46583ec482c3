"""`kind = "dynamics"`: Microsoft Dynamics 365 / Dataverse webhooks
(docs/reference/sources/dynamics.md).

Dataverse signs nothing: the webhook is registered with a shared key
(docs/reference/sources/dynamics.md#authentication), sent either as
`?code=<key>` (authentication "WebhookKey") or as a header pair ("HttpHeader":
`X-Consent-Relay-Token: <key>` or `Authorization: Bearer <key>`). It is compared in constant
time against every active secret (`auth.check_token`).

The body is a `RemoteExecutionContext` (docs/reference/sources/dynamics.md#payload). Handled:
`Create` and `Update` of a `contact` or a `lead`; anything else is ignored with its reason. A step
registered before the operation (Stage 10/20) sees a change that may still be refused, so it is
ignored too: register the step as PostOperation (40), asynchronous.

Duplicates: Dataverse retries once, on 502/503/504 only
(docs/reference/sources/dynamics.md#retries), with the same context. The event id is `OperationId`,
the id of the step's System Job; a synchronous step has no System Job, so when `OperationId` is
missing or the empty GUID (UNVERIFIED) the event is
`CorrelationId` + message + record + `OperationCreatedOn` (CorrelationId alone is shared by
every operation of one request chain).

Answers: the attributes of `InputParameters.Target` (only the changed columns on Update)
merged with those of the registered post-images (filling the columns the Target lacks);
`{"Value": ...}` wrappers (OptionSetValue, Money) are unwrapped; the labels Dataverse formats
for option sets and booleans are offered as `formatted.<column>`. The consent columns
(`donotbulkemail`, `donotemail`, Customer Insights consent) are UNVERIFIED
(docs/reference/sources/dynamics.md#payload). Over 256 KB Dataverse drops the parameters and images
and sets `x-ms-dynamics-msg-size-exceeded`: then an event without its address is ignored with that
reason.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from schemas.sources import KIND_VARIABLES
from service.sources.auth import check_token
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    MediaTypeError,
    PayloadError,
    SignedRequest,
    SourceEvent,
    epoch_millis,
    ignored_type,
    parse_time,
)
from service.sources.payloads import is_json, json_object, parse_json
from service.sources.shapes import optional_scalar
from service.sources.token import with_query

EMAIL_COLUMN = "emailaddress1"
SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
PRE_COMMIT_STAGES = {10: "PreValidation", 20: "PreOperation"}
# The offset is display only; more than 18 digits is no time (and past Python's int-string
# limit, https://docs.python.org/3/library/stdtypes.html#int-max-str-digits, not even a number).
WCF_DATE = re.compile(r"^/Date\((-?\d{1,18})([+-]\d{4})?\)/$")
MAX_EVENT_ID = 255  # the ledger's delivery_id column
SIZE_EXCEEDED_REASON = (
    f"Dataverse removed the parameters and images ({SIZE_EXCEEDED_HEADER}: over 256 KB); "
    "register a post-image with only the columns needed."
)
OTHER_MESSAGES = {
    "Delete": "A deleted record carries no consent answer (deleting is not a withdrawal).",
    "Assign": "A change of owner is not a consent change.",
    "SetState": "A change of status is not a consent change.",
}


def _events() -> dict[str, str | None]:
    table: dict[str, str | None] = {}
    for entity in ("contact", "lead"):
        table.update({f"{entity}.Create": None, f"{entity}.Update": None})
        table.update({f"{entity}.{message}": why for message, why in OTHER_MESSAGES.items()})
    return table


class DynamicsKind(BaseKind):
    name: ClassVar[str] = "dynamics"
    EVENTS: ClassVar[Mapping[str, str | None]] = _events()
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{entity}:{record_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["dynamics"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        check_token(request, self.secrets, None)
        return Authenticated()

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        context = _read_context(request)
        event_id = _event_id(context)
        event_type = f"{context.get('PrimaryEntityName')}.{context.get('MessageName')}"
        reason = ignored_type(self, event_type) or _stage_reason(
            optional_scalar(context.get("Stage"), "Stage")
        )
        answers = _answers(context)
        email_column = self.source.effective_mapping.email or EMAIL_COLUMN
        if request.header(SIZE_EXCEEDED_HEADER) is not None and not answers.get(email_column):
            reason = reason or SIZE_EXCEEDED_REASON
        if reason is not None:
            return [SourceEvent(event_id, event_type, ignored=reason)]
        email = answers.get(EMAIL_COLUMN)
        return [
            SourceEvent(
                event_id,
                event_type,
                email if isinstance(email, str) else None,
                answers,
                _variables(context),
                _wcf_time(context.get("OperationCreatedOn")),
            )
        ]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """As a webhook registered with authentication "WebhookKey": `?code=<key>`."""
        headers = {"Content-Type": content_type}
        return SignedRequest(with_query(url, code=self.secrets[0]), headers, body)


def _read_context(request: InboundRequest) -> dict[str, Any]:
    """The JSON body; a UTF-8 byte order mark, which .NET serialisers may write, is
    dropped (UNVERIFIED whether Dataverse does)."""
    if not is_json(request.mimetype):
        raise MediaTypeError("The body must be application/json.")
    return json_object(parse_json(request.body.removeprefix(codecs.BOM_UTF8)))


def _event_id(context: Mapping[str, Any]) -> str:
    operation = context.get("OperationId")
    if isinstance(operation, str) and operation and operation != EMPTY_GUID:
        event_id = operation
    else:
        correlation = context.get("CorrelationId")
        if not isinstance(correlation, str) or not correlation:
            raise PayloadError("A Dataverse context has an OperationId or a CorrelationId.")
        parts = ("MessageName", "PrimaryEntityId", "OperationCreatedOn")
        event_id = ":".join([correlation, *(str(context.get(name) or "") for name in parts)])
    if len(event_id) > MAX_EVENT_ID:
        raise PayloadError("The Dataverse OperationId is too long.")
    return event_id


def _variables(context: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "entity": context.get("PrimaryEntityName"),
        "record_id": context.get("PrimaryEntityId"),
        "organization_id": context.get("OrganizationId"),
        "organization_name": context.get("OrganizationName"),
        "operation_id": context.get("OperationId"),
        "correlation_id": context.get("CorrelationId"),
        "message": context.get("MessageName"),
    }


def _stage_reason(stage: Any) -> str | None:
    if stage in PRE_COMMIT_STAGES:
        name = PRE_COMMIT_STAGES[stage]
        return f"A {name} step sees a change that may still be refused; register PostOperation."
    return None


def _answers(context: Mapping[str, Any]) -> dict[str, Any]:
    """Target's attributes, then the post-images' for the columns Target lacks."""
    answers: dict[str, Any] = {}
    entities = [_entity(pair) for pair in _pairs(context.get("InputParameters"), "Target")]
    entities += [_entity(pair) for pair in _pairs(context.get("PostEntityImages"))]
    for entity in entities:
        for key, value in _pairs_by_key(entity.get("Attributes")):
            answers.setdefault(key, _unwrap(value))
        for key, value in _pairs_by_key(entity.get("FormattedValues")):
            answers.setdefault(f"formatted.{key}", value)
    return answers


def _pairs(value: Any, key: str | None = None) -> list[Any]:
    """The values of a `[{"key", "value"}]` list (only `key`'s when given)."""
    return [value for name, value in _pairs_by_key(value) if key is None or name == key]


def _pairs_by_key(value: Any) -> list[tuple[str, Any]]:
    if not isinstance(value, list):
        return []
    return [
        (item["key"], item.get("value"))
        for item in value
        if isinstance(item, dict) and isinstance(item.get("key"), str)
    ]


def _entity(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _unwrap(value: Any) -> Any:
    """`{"Value": 1}` (OptionSetValue, Money) -> 1; a list of them (multi-select) -> [1, 2].
    An EntityReference stays an object, which the mapping never takes for an answer."""
    if isinstance(value, dict) and "Value" in value:
        return value["Value"]
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    return value


def _wcf_time(value: Any) -> dt.datetime | None:
    """`/Date(1506409448000-0700)/`: milliseconds since the epoch (UTC; the offset only says
    where it was shown); ISO 8601 is read too."""
    match = WCF_DATE.match(value) if isinstance(value, str) else None
    if match is not None:
        return epoch_millis(int(match.group(1)))
    return parse_time(value)
