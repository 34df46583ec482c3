"""Standard Webhooks v1 (symmetric) verification.

Spec: standard-webhooks `spec/standard-webhooks.md` v1.0.0 (docs/reference/standard-webhooks.md,
docs/reference/standard-webhooks.md). We do not call `standardwebhooks.Webhook.verify` here because
its tolerance is hard-coded to five minutes and it raises ValueError/binascii.Error on malformed
headers (docs/reference/standard-webhooks.md#the-python-package); the package is used in tests and
the CLI as the independent signer that this verifier must agree with.

Senders built on Svix send `svix-id`, `svix-timestamp` and `svix-signature` by default (the
`webhook-*` names are an option there): the same scheme under other names, so each header is
read under its spec name first, else under its Svix name, as Svix's own verifier does
(svix `webhooks.py`, https://github.com/svix/svix-webhooks/blob/main/python/svix/webhooks.py).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from schemas.sources import decode_whsec
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    SignatureError,
    SignedRequest,
    SourceEvent,
)
from service.sources.canonical import canonical_decision

MAX_ID_LENGTH = 255
MAX_SIGNATURE_HEADER = 4096
# The spec's header names, and the names Svix sends by default for the same values.
SVIX_NAMES = {"id": "svix-id", "timestamp": "svix-timestamp", "signature": "svix-signature"}


@dataclass(frozen=True)
class VerifiedDelivery:
    delivery_id: str
    timestamp: int


def sign(key: bytes, delivery_id: str, timestamp: int | str, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery (spec: `id.timestamp.body`)."""
    signed = delivery_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Iterable[bytes],
    tolerance_seconds: int,
    now: float | None = None,
) -> VerifiedDelivery:
    """Check the three `webhook-*` (or `svix-*`) headers against the raw body; fail closed."""
    delivery_id = _delivery_id(_header(headers, "id"))
    timestamp, sent_timestamp = _timestamp(_header(headers, "timestamp"), tolerance_seconds, now)
    offered = _v1_signatures(_header(headers, "signature"))
    for key in keys:
        # Sign the header value exactly as sent (a "0123" timestamp is signed as "0123").
        expected = base64.b64decode(sign(key, delivery_id, sent_timestamp, body)[3:])
        # Compare every offered signature, in constant time, against each active secret.
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return VerifiedDelivery(delivery_id=delivery_id, timestamp=timestamp)
    raise SignatureError("No signature matches an active secret.")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """`webhook-<name>`, else Svix's `svix-<name>` (lower-case names, as InboundRequest has)."""
    return headers.get(f"webhook-{name}") or headers.get(SVIX_NAMES[name])


def _delivery_id(value: str | None) -> str:
    if not value:
        raise SignatureError("Missing webhook-id (or svix-id) header.")
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise SignatureError("Malformed webhook-id header.")
    return value


def _timestamp(value: str | None, tolerance_seconds: int, now: float | None) -> tuple[int, str]:
    """The checked timestamp, and the header text it came from (which is what was signed)."""
    if not value:
        raise SignatureError("Missing webhook-timestamp (or svix-timestamp) header.")
    # Integer unix seconds only: the reference library floors "123.9" and signs a value
    # other than the one sent (docs/reference/standard-webhooks.md#the-python-package).
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise SignatureError("Malformed webhook-timestamp header.")
    timestamp = int(value)
    current = time.time() if now is None else now
    if timestamp < current - tolerance_seconds:
        raise SignatureError("Message timestamp too old.")
    if timestamp > current + tolerance_seconds:
        raise SignatureError("Message timestamp too new.")
    return timestamp, value


def _v1_signatures(value: str | None) -> list[bytes]:
    if not value:
        raise SignatureError("Missing webhook-signature (or svix-signature) header.")
    if len(value) > MAX_SIGNATURE_HEADER:
        raise SignatureError("Malformed webhook-signature header.")
    found = []
    for entry in value.split(" "):
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue  # other schemes (v1a) and malformed entries never match
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not found:
        raise SignatureError("No v1 signature in webhook-signature header.")
    return found


class StandardWebhooksVerifier:
    """Verifier bound to one configured source's secrets and tolerance."""

    def __init__(self, secrets: Iterable[str], tolerance_seconds: int):
        self._keys = tuple(decode_whsec(secret) for secret in secrets)
        self._tolerance = tolerance_seconds

    def __call__(self, headers: Mapping[str, str], body: bytes) -> VerifiedDelivery:
        return verify(headers, body, self._keys, self._tolerance)


class StandardWebhooksKind(BaseKind):
    """`kind = "standard-webhooks"`: our canonical payload, signed per the spec; one decision
    per delivery, recognised by its `webhook-id`."""

    name: ClassVar[str] = "standard-webhooks"
    EVENTS: ClassVar[Mapping[str, str | None]] = {"decision": None}

    def __init__(self, source: Any, max_future_skew: dt.timedelta):
        super().__init__(source, max_future_skew)
        self._keys = tuple(decode_whsec(secret) for secret in self.secrets)

    def authenticate(self, request: InboundRequest) -> Authenticated:
        delivery = verify(request.headers, request.body, self._keys, self.tolerance)
        return Authenticated(delivery.delivery_id, delivery.timestamp)

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        decision = canonical_decision(request, self.source.source, self.max_future_skew)
        assert auth.delivery_id is not None
        return [SourceEvent(auth.delivery_id, "decision", decision=decision)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        delivery_id = f"msg_{hashlib.sha256(body + str(now).encode()).hexdigest()[:24]}"
        timestamp = int(now)
        headers = {
            "Content-Type": content_type,
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._keys[0], delivery_id, timestamp, body),
        }
        return SignedRequest(url, headers, body)
