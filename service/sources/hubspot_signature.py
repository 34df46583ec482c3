"""HubSpot request signatures v1, v2 and v3 (docs/reference/sources/hubspot.md#signatures,
docs/reference/sources/hubspot.md#replay, docs/reference/senders.md#test-vectors vectors).

- v1: `X-HubSpot-Signature` (`X-HubSpot-Signature-Version: v1`) = hex SHA-256 (not an HMAC)
  of `secret + body`.
- v2: the same header (`-Version: v2`) = hex SHA-256 of `secret + METHOD + URI + body`.
- v3: `X-HubSpot-Signature-v3` = base64 HMAC-SHA256 (key: the app's client secret) of
  `METHOD + URI + body + timestamp`, with `X-HubSpot-Request-Timestamp` in MILLISECONDS.

Only v3 binds a time, so only v3 resists a replay (docs/reference/sources/hubspot.md#replay); v1
binds neither the URL nor a time. HubSpot's Python SDK (`hubspot/utils/signature.py`) computes
exactly these strings.

The URI is the URL as HubSpot called it (protocol, host, path and query in their original
order). For v3 HubSpot asks receivers to decode some URL-encoded characters first; the table
is UNVERIFIED (docs/reference/sources/hubspot.md#signatures): the one below is the one two
independent public verifiers use, while the SDK decodes nothing. A v3 signature over either form is
accepted (both need the secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from service.sources.auth import require_signature
from service.sources.base import SignatureError

SIGNATURE_HEADER = "x-hubspot-signature"
VERSION_HEADER = "x-hubspot-signature-version"
V3_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
VERSIONS = ("v1", "v2", "v3")
MAX_TIMESTAMP_DIGITS = 16  # milliseconds; 13 digits today
# UNVERIFIED (docs/reference/sources/hubspot.md#signatures): the characters HubSpot asks to decode
# in the v3 URI.
V3_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


@dataclass(frozen=True)
class SignedParts:
    """What a HubSpot signature covers: the request line as HubSpot sent it, and the body."""

    method: str
    uri: str
    body: bytes


def signature_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def signature_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(f"{secret}{method}{uri}".encode() + body).hexdigest()


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    signed = f"{method}{uri}".encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def decode_v3_uri(uri: str) -> str:
    """The URI with the v3 table's escapes decoded (either case of hex digit)."""
    for encoded, decoded in V3_DECODED.items():
        uri = uri.replace(encoded, decoded).replace(encoded.lower(), decoded)
    return uri


def verify(
    headers: Mapping[str, str],
    parts: SignedParts,
    secrets: Sequence[str],
    versions: Collection[str],
    tolerance_seconds: int,
    now: float,
) -> int | None:
    """The checked v3 timestamp in milliseconds (None for v1/v2); fails closed.

    When v3 is accepted and its header is present, only v3 is checked: a failed v3 never
    falls back to the weaker v1/v2 header of the same request."""
    v3 = headers.get(V3_HEADER)
    if v3 and "v3" in versions:
        return _verify_v3(v3, headers.get(TIMESTAMP_HEADER), parts, secrets, tolerance_seconds, now)
    legacy = headers.get(SIGNATURE_HEADER)
    if legacy:
        version = (headers.get(VERSION_HEADER) or "").strip().lower()
        if version not in ("v1", "v2"):
            raise SignatureError("Missing or unknown X-HubSpot-Signature-Version (v1 or v2).")
        if version not in versions:
            raise SignatureError(f"Signature version {version} is not accepted by this source.")
        _verify_legacy(version, legacy, parts, secrets)
        return None
    if v3:
        raise SignatureError("Signature version v3 is not accepted by this source.")
    raise SignatureError("Missing X-HubSpot-Signature-v3 or X-HubSpot-Signature header.")


def _verify_legacy(version: str, offered: str, parts: SignedParts, secrets: Sequence[str]) -> None:
    expected = (
        signature_v1(secret, parts.body)
        if version == "v1"
        else signature_v2(secret, parts.method, parts.uri, parts.body)
        for secret in secrets
    )
    require_signature(
        offered.strip().lower(), expected, f"No {version} signature matches an active secret."
    )


def _verify_v3(
    offered: str,
    timestamp: str | None,
    parts: SignedParts,
    secrets: Sequence[str],
    tolerance_seconds: int,
    now: float,
) -> int:
    checked = _timestamp(timestamp, tolerance_seconds, now)
    signed_timestamp = str(timestamp)  # as sent: HubSpot signs its own header string
    uris = dict.fromkeys([decode_v3_uri(parts.uri), parts.uri])  # decoded first, no repeat
    expected = (
        signature_v3(secret, parts.method, uri, parts.body, signed_timestamp)
        for secret in secrets
        for uri in uris
    )
    require_signature(offered.strip(), expected, "No v3 signature matches an active secret.")
    return checked


def _timestamp(value: str | None, tolerance_seconds: int, now: float) -> int:
    """Milliseconds since the epoch (docs/reference/sources/hubspot.md#replay), within the tolerance
    both ways."""
    if not value:
        raise SignatureError("Missing X-HubSpot-Request-Timestamp header.")
    if not value.isascii() or not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS:
        raise SignatureError("Malformed X-HubSpot-Request-Timestamp header.")
    timestamp = int(value)
    sent = timestamp / 1000  # milliseconds, not seconds
    if sent < now - tolerance_seconds:
        raise SignatureError("Request timestamp too old.")
    if sent > now + tolerance_seconds:
        raise SignatureError("Request timestamp too new.")
    return timestamp


def signed_headers(secret: str, version: str, parts: SignedParts, now: float) -> dict[str, str]:
    """The headers HubSpot would send for `version` (used by `sign`)."""
    if version == "v3":
        timestamp = str(int(now * 1000))
        uri = decode_v3_uri(parts.uri)
        return {
            "X-HubSpot-Signature-v3": signature_v3(
                secret, parts.method, uri, parts.body, timestamp
            ),
            "X-HubSpot-Request-Timestamp": timestamp,
        }
    if version == "v2":
        value = signature_v2(secret, parts.method, parts.uri, parts.body)
    else:
        value = signature_v1(secret, parts.body)
    return {"X-HubSpot-Signature": value, "X-HubSpot-Signature-Version": version}
