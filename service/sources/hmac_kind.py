"""`kind = "hmac"`: any sender that signs with an HMAC, configured in TOML alone
(docs/sources/hmac.md). The signature is `service/sources/hmac_signature.py`, the body and
the located values `service/sources/hmac_body.py`, the settings and the presets
`schemas/hmac.py`.

One delivery is one event: its id is the configured `event_id` (a header, a body path or the
body's SHA-256); without one (only with a signed timestamp, or `accept_replays = true`) it is
the SHA-256 of the signature header, so the same signed delivery is the same event. Its type
is the configured `event_type` (else `webhook`); when `events` lists the handled types, any
other is recorded as ignored with its reason (docs/reference/senders.md#answers-have-side-effects).
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
)
from service.sources.hmac_body import answers, locate, occurred, read_body
from service.sources.hmac_signature import Scheme, signature_headers, verify

DEFAULT_TYPE = "webhook"
TEST_VALUE = "sent-by-consent-relay"  # header values `sources send` fills in (ids aside)


class HmacKind(BaseKind):
    name: ClassVar[str] = "hmac"
    EVENTS: ClassVar[Mapping[str, str | None]] = {}  # from the source's `events` (below)
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["hmac"]

    def __init__(self, source: Any, max_future_skew: dt.timedelta):
        super().__init__(source, max_future_skew)
        self.settings: Mapping[str, Any] = source.options["hmac"]
        self.scheme = Scheme.from_settings(self.settings)
        self.handled: frozenset[str] | None = (
            frozenset(self.settings["events"]) if "events" in self.settings else None
        )

    def authenticate(self, request: InboundRequest) -> Authenticated:
        checked = verify(
            self.scheme,
            request.headers,
            request.body,
            request.url,
            self.secrets,
            self.tolerance,
            request.received_at,
        )
        if checked is not None and self.scheme.timestamp_unit == "milliseconds":
            checked //= 1000
        return Authenticated(timestamp=checked)

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        flat = answers(read_body(request, self.settings["body"]))
        event_id = self._event_id(request, flat)
        event_type = DEFAULT_TYPE
        if "event_type" in self.settings:
            located = locate(self.settings["event_type"], request, flat, "event type")
            if located is None:
                raise PayloadError(f"No event type at {self.settings['event_type']!r}.")
            event_type = located
        if self.handled is not None and event_type not in self.handled:
            reason = f"Event type {event_type!r} is not in this source's events."
            return [SourceEvent(event_id, event_type, ignored=reason)]
        variables: dict[str, Any] = {"event_id": event_id, "event_type": event_type}
        for name, locator in self.settings["variables"].items():
            variables[name] = locate(locator, request, flat, f"variable {name!r}")
        when = occurred(self.settings.get("occurred_at"), request, flat)
        return [SourceEvent(event_id, event_type, None, flat, variables, when)]

    def _event_id(self, request: InboundRequest, flat: Mapping[str, Any]) -> str:
        locator = self.settings.get("event_id")
        if locator is None:
            signature = request.header(self.scheme.header) or ""
            return hashlib.sha256(signature.encode()).hexdigest()
        found = locate(locator, request, flat, "event id")
        if found is None:
            raise PayloadError(f"No event id at {locator!r}.")
        return found

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """As the sender would: the signature, and a value for each header the config reads
        (a fresh delivery id, the first handled event type, a placeholder for the rest)."""
        headers = {"Content-Type": content_type}
        delivery = hashlib.sha256(body + str(now).encode()).hexdigest()[:32]
        located = [
            (self.settings.get("event_type"), self._first_type()),
            (self.settings.get("event_id"), delivery),
            *((locator, TEST_VALUE) for locator in self.settings["variables"].values()),
        ]
        for locator, value in located:
            if isinstance(locator, str) and locator.startswith("header:"):
                headers.setdefault(locator.removeprefix("header:"), value)
        headers.update(signature_headers(self.scheme, self.secrets[0], body, url, now))
        return SignedRequest(url, headers, body)

    def _first_type(self) -> str:
        return str(self.settings["events"][0]) if self.settings.get("events") else DEFAULT_TYPE
