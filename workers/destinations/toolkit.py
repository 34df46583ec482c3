"""What the peer clients (Acoustic Connect, Dotdigital, MoEngage) share: the result of a write
that needs explaining in the ledger, the `channel_consent` mapping tables, one verdict enum
with its error classes, and the HTTP call with its rate-limit slot and transport errors.

References are to docs/reference/ (acoustic.md, dotdigital.md, moengage.md, mapping.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite, Verdict
from relay.telemetry import tracing
from schemas.destinations import ACOUSTIC, DOTDIGITAL, MOENGAGE
from workers.destinations.errors import (
    AuthError,
    DeliveryError,
    MisconfiguredError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from workers.ratelimit.pace import NoLimit, Throttle

ATTRIBUTE, CHANNEL_CONSENT = "attribute", "channel_consent"
VENDORS = {ACOUSTIC: "Acoustic Connect", DOTDIGITAL: "Dotdigital", MOENGAGE: "MoEngage"}

# channel_consent mode: the canonical decision as the platform's e-mail channel status
# (docs/reference/mapping.md#canonical-states-on-each-platform). A decision missing from a table has
# no value there and is not written (see `plan_channel`).
CHANNEL_STATUS: dict[str, dict[str, str | None]] = {
    # Acoustic EMAIL channel (docs/reference/acoustic.md#consent-values). `unknown` is written as
    # null: the vendor doc lists null among the input values
    # (docs/reference/acoustic.md#operations), but whether updateContacts accepts it is UNVERIFIED.
    ACOUSTIC: {"granted": "OPT_IN", "denied": "OPT_OUT", "withdrawn": "OPT_OUT", "unknown": None},
    # Dotdigital v3 channelProperties.email.status (docs/reference/dotdigital.md#consent-values).
    # `unknown` is not written: a status left out makes a *new* contact subscribed
    # (docs/reference/dotdigital.md#consent-values), an opt-in nobody gave.
    DOTDIGITAL: {"granted": "subscribed", "denied": "unsubscribed", "withdrawn": "unsubscribed"},
    # MoEngage opt_in_status (docs/reference/moengage.md#consent-values): no "unknown" or null value
    # exists, so nothing is written.
    MOENGAGE: {"granted": "DOUBLE_OPTED_IN", "denied": "OPTED_OUT", "withdrawn": "OPTED_OUT"},
}


@dataclass(frozen=True)
class Written:
    """A write whose attempt row needs more than the HTTP status: `outcome` is `delivered`,
    `not_written` (nothing was sent: the decision has no value there) or `unverified` (the
    destination accepted it, but its answer cannot show that it was applied: see
    workers/delivery/outcomes.py), `detail` says why or how the decision was mapped. The ledger
    keeps both in delivery_attempts."""

    status: int | None
    outcome: str = "delivered"
    detail: str | None = None


@dataclass(frozen=True)
class ChannelPlan:
    """The channel status to write (None: GraphQL null) and the note for the ledger, or
    `write=False` when the decision has no value at this platform."""

    write: bool
    status: str | None
    note: str


def plan_channel(kind: str, decision: str) -> ChannelPlan:
    table, vendor = CHANNEL_STATUS[kind], VENDORS[kind]
    if decision not in table:
        return ChannelPlan(False, None, f"not written: {decision} has no {vendor} value")
    status = table[decision]
    shown = "null" if status is None else status
    note = f"channel_consent: {decision} written as {shown}"
    if decision in ("denied", "withdrawn"):
        note += " (lossy: denied and withdrawn look the same there)"
    elif status is None:
        note += " (UNVERIFIED that the platform accepts null)"
    return ChannelPlan(True, status, note)


@dataclass(frozen=True)
class FieldNames:
    """The custom fields of attribute mode (also written alongside in channel_consent mode,
    where the platform can take them:
    docs/reference/mapping.md#tracking-consent-vs-marketing-opt-in)."""

    consent: str
    source: str
    source_id: str

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FieldNames:
        return cls(options["consent_field"], options["source_field"], options["source_id_field"])

    def values(self, write: ConsentWrite) -> dict[str, str]:
        # All three every time: an older decision's source_id must not linger as evidence.
        return {
            self.consent: write.tracking_consent,
            self.source: write.source,
            self.source_id: write.source_id or "",
        }


ERRORS: dict[Verdict, type[DeliveryError]] = {
    Verdict.NOT_FOUND: NotFoundError,
    Verdict.MISCONFIGURED: MisconfiguredError,
    Verdict.REJECTED: RejectedError,
    Verdict.RATE_LIMITED: RateLimitedError,
    Verdict.AUTH: AuthError,
    Verdict.TRANSIENT: TransientError,
}


def error_for(vendor: str, verdict: Verdict, status: int | None, body: str) -> DeliveryError:
    return ERRORS[verdict](f"{vendor} answered {verdict.value}", status=status, body=body)


def probe_ok(verdict: Verdict) -> bool:
    """A probe is an authenticated call that writes nothing: any answer past the credentials
    (even "invalid input" or "not found") shows that the destination takes them again."""
    return verdict not in (Verdict.AUTH, Verdict.TRANSIENT, Verdict.RATE_LIMITED)


def json_body(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class Http:
    """One HTTP call to a peer: a slot of the shared rate limit first, then the request with
    connect and read timeouts; timeouts and connection errors are transient."""

    def __init__(
        self,
        settings: DestinationSettings,
        vendor: str,
        session: requests.Session | None,
        throttle: Throttle | None,
    ) -> None:
        self.vendor = vendor
        self.destination = settings.name
        self.throttle = throttle or NoLimit()
        self.timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json"})

    def call(self, method: str, url: str, path: str, **kwargs: Any) -> requests.Response:
        self.throttle.acquire()  # every call counts toward the vendor's limit
        # `path` is the template (Dotdigital's URL holds the address): the span's only URL.
        with tracing.destination_call(self.destination, method, path) as span:
            response = self._send(method, url, path, **kwargs)
            tracing.annotate(span, {"http.response.status_code": response.status_code})
            return response

    def _send(self, method: str, url: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise TransientError(f"{self.vendor} timed out on {path}") from exc
        except requests.RequestException as exc:
            name = type(exc).__name__
            raise TransientError(f"{self.vendor} unreachable on {path}: {name}") from exc

    def judge(self, verdict: Verdict, response: requests.Response) -> Verdict:
        if verdict is Verdict.RATE_LIMITED:
            self.throttle.slow_down()  # shared by every worker: all of them back off
        return verdict
