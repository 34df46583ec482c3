"""What every source kind works with: the request as received, the events it yields, errors.

A kind is one module under `service/sources/` (Zulip's `zerver/webhooks/` layout): a pure
`authenticate` over the raw request (fails closed), a `parse` that turns the body into
`SourceEvent`s, and an explicit table of handled and ignored event types. Mapping an event's
answers onto a canonical decision is shared (`service/sources/mapping.py`), driven by config.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from relay.domain import Decision
from relay.errors import ProblemError
from schemas.consent import SOURCE_EVENT_SCHEMA


class SignatureError(ProblemError):
    """Authentication failed (401). The message is safe to return to the caller."""

    http_status = 401
    slug = "invalid-signature"
    title = "Signature verification failed"
    reason = "signature"


class PayloadError(ProblemError):
    """The body cannot be read at all (400): not the declared format, or not the kind's shape.

    Only for bodies that cannot be parsed. A parsed event that cannot be used (no address,
    an unmapped answer, an event type we do not handle) is *ignored* with a recorded reason
    and a 2xx, because several senders disable the hook or stop retrying on a 4xx
    (docs/reference/senders.md#answers-have-side-effects)."""

    http_status = 400
    slug = "malformed-body"
    title = "Malformed body"
    reason = "malformed_body"


class MalformedJsonError(PayloadError):
    """The body is declared JSON but is not UTF-8 JSON (400 `malformed-json`)."""

    slug = "malformed-json"
    title = "Malformed JSON"
    reason = "malformed_json"


class MediaTypeError(PayloadError):
    """The Content-Type is not what the kind accepts (415)."""

    http_status = 415
    slug = "unsupported-media-type"
    title = "Unsupported Media Type"
    reason = "media_type"


class FieldsError(ProblemError):
    """A canonical payload failed validation (422), with marshmallow's per-field messages."""

    http_status = 422
    slug = "validation-failed"
    title = "The payload failed validation"
    reason = "validation"

    def __init__(self, messages: Any):
        super().__init__("See errors for the message of each field.", errors=messages)
        self.messages = messages


@dataclass(frozen=True)
class InboundRequest:
    """Everything a kind may look at. `headers` names are lower-case; `body` is the raw bytes
    the signatures cover (docs/reference/senders.md#read-the-raw-body-first)."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    mimetype: str
    form: Mapping[str, str] = field(default_factory=dict)
    received_at: float = 0.0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Authenticated:
    """Who sent it, as far as the scheme can tell: the delivery id and timestamp it signed."""

    delivery_id: str | None = None
    timestamp: int | None = None  # unix seconds


@dataclass(frozen=True)
class SourceEvent:
    """One event of a delivery.

    `event_id` is the sender's own id for the event (HubSpot `eventId`, Salesforce
    Notification Id, Typeform `event_id`): duplicates are recognised by it.
    Either `decision` is set (canonical kinds), or `answers` and `variables` are mapped by
    config, or `ignored` says why nothing is recorded as a decision.
    """

    event_id: str
    event_type: str
    email: str | None = None  # the kind's own e-mail field, when the mapping names none
    answers: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: dt.datetime | None = None
    decision: Decision | None = None
    ignored: str | None = None
    # The sender's id of a person who asked to be erased (HubSpot contact.privacyDeletion
    # with `erase_on_privacy_deletion`): service/intake/erasures.py erases who it matches.
    erase_object: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    """What `consent-relay sources send` puts on the wire for a kind: the URL (a token kind
    adds its token there) and the headers (content type, signature, timestamp)."""

    url: str
    headers: Mapping[str, str]
    body: bytes


class SourceKind(Protocol):
    """A source kind bound to one configured source (its secrets and options)."""

    name: ClassVar[str]
    #: event type -> None when handled, or the reason it is ignored.
    EVENTS: ClassVar[Mapping[str, str | None]]
    #: default `source_id` template when the config names none.
    DEFAULT_SOURCE_ID: ClassVar[str | None]
    #: the names `source` and `source_id` templates may use.
    VARIABLES: ClassVar[frozenset[str]]

    def authenticate(self, request: InboundRequest) -> Authenticated: ...

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]: ...

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """Sign (or authorise) a body as the sender would, with the first active secret."""
        ...

    def answer(self, outcomes: Sequence[Any]) -> tuple[int, str, bytes] | None:
        """A kind-specific answer (status, content type, body), or None for the JSON one."""
        ...


def storable_events(events: Sequence[SourceEvent]) -> Sequence[SourceEvent]:
    """The events, when the ledger can store each one's id and type; else FieldsError (422)
    naming the field: NUL, a lone surrogate or an id longer than the column can never be
    recorded, not even as ignored, and would otherwise fail in the database."""
    problems: dict[str, Any] = {}
    for index, event in enumerate(events):
        found = SOURCE_EVENT_SCHEMA.validate(
            {"event_id": event.event_id, "event_type": event.event_type}
        )
        for name, messages in found.items():
            problems[name if len(events) == 1 else f"events[{index}].{name}"] = messages
    if problems:
        raise FieldsError(problems)
    return events


def ignored_type(kind: SourceKind, event_type: str) -> str | None:
    """Why an event type is ignored (None when it is handled), from the kind's table."""
    if event_type in kind.EVENTS:
        return kind.EVENTS[event_type]
    return f"Event type {event_type!r} is not handled by the {kind.name} source."


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time (a trailing Z allowed) as an aware datetime; None when absent or
    unreadable (the time of receipt stands in, see relay.ledger.record)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def epoch_millis(value: Any) -> dt.datetime | None:
    """Milliseconds since the epoch (HubSpot `occurredAt`) as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None


class BaseKind:
    """Defaults shared by the kinds: the bound settings, and the JSON answer."""

    name: ClassVar[str]
    EVENTS: ClassVar[Mapping[str, str | None]]
    DEFAULT_SOURCE_ID: ClassVar[str | None] = None
    VARIABLES: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, source: Any, max_future_skew: dt.timedelta):
        self.source = source  # relay.config.settings.SourceSettings
        self.secrets: tuple[str, ...] = tuple(source.secrets)
        self.tolerance: int = source.timestamp_tolerance_seconds
        self.max_future_skew = max_future_skew

    def answer(self, outcomes: Sequence[Any]) -> tuple[int, str, bytes] | None:
        return None
