"""The configurable HMAC signature of `kind = "hmac"`: one pure `verify` over the raw bytes
and the `sign` that inverts it (the CLI and the tests sign with it).

What varies between senders (docs/reference/hmac-senders.md#what-varies) is read from the
source's `[hmac]` table (schemas/hmac.py): the header, a prefix (`sha256=`), several
signatures separated by one character, or a `t=...,v1=...` list; SHA-1/256/512; hex or
base64; and what is signed: the raw body, `<timestamp><separator><body>`, or the URL as
received followed by the body. Every failure is a `SignatureError` (401) that names the
problem; every active secret is tried against every offered signature in constant time,
without an early exit that would tell which one matched.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.sources.base import SignatureError

MAX_HEADER = 4096
MAX_SIGNATURES = 16
MAX_TIMESTAMP_DIGITS = 16  # milliseconds are 13 digits today
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha512": 64}


@dataclass(frozen=True)
class Scheme:
    """A source's `[hmac]` settings that concern the signature."""

    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    separator: str = ""
    signature_key: str | None = None
    timestamp_key: str | None = None
    timestamp_header: str | None = None
    timestamp_unit: str = "seconds"
    signed: str = "body"
    timestamp_separator: str = "."

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Scheme:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in settings.items() if key in names})

    @property
    def timestamped(self) -> bool:
        return bool(self.timestamp_key or self.timestamp_header)


@dataclass(frozen=True)
class Offered:
    """What the request carries: the decoded signatures and the timestamp text as sent."""

    signatures: list[bytes]
    timestamp: str | None


def digest(scheme: Scheme, secret: str, body: bytes, url: str, timestamp: str | None) -> bytes:
    """The MAC over what the scheme signs, keyed with the secret's UTF-8 bytes."""
    if scheme.signed == "timestamp-body":
        message = f"{timestamp}{scheme.timestamp_separator}".encode() + body
    elif scheme.signed == "url-body":
        message = url.encode() + body
    else:
        message = body
    return hmac.new(secret.encode(), message, scheme.algorithm).digest()


def verify(
    scheme: Scheme,
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    secrets: Sequence[str],
    tolerance_seconds: int,
    now: float,
) -> int | None:
    """The checked timestamp (in the scheme's unit; None when none is signed); fails closed."""
    offered = read_header(scheme, headers)
    checked = _timestamp(scheme, offered.timestamp, headers, tolerance_seconds, now)
    signed_text = offered.timestamp or headers.get((scheme.timestamp_header or "").lower())
    matched = False
    for secret in secrets:
        expected = digest(scheme, secret, body, url, signed_text)
        for candidate in offered.signatures:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("No signature matches an active secret.")
    return checked


def read_header(scheme: Scheme, headers: Mapping[str, str]) -> Offered:
    """The signatures (decoded) and, for a `t=...,v1=...` list, its timestamp."""
    name = scheme.header
    value = headers.get(name.lower())
    if not value:
        raise SignatureError(f"Missing {name} header.")
    if len(value) > MAX_HEADER or not value.isascii():
        raise SignatureError(f"Malformed {name} header.")
    timestamp = None
    if scheme.signature_key:
        entries, timestamp = _keyed(scheme, value)
    else:
        entries = value.split(scheme.separator) if scheme.separator else [value]
    texts = [entry.strip() for entry in entries if entry.strip()][:MAX_SIGNATURES]
    if scheme.prefix:
        texts = [text[len(scheme.prefix) :] for text in texts if text.startswith(scheme.prefix)]
        if not texts:
            raise SignatureError(
                f"No signature in {name} starts with {scheme.prefix!r} "
                "(another algorithm or scheme?)."
            )
    decoded = [found for found in (_decode(scheme, text) for text in texts) if found]
    if not decoded:
        raise SignatureError(
            f"No signature in {name} is {scheme.encoding} of a {scheme.algorithm} MAC."
        )
    return Offered(decoded, timestamp)


def _keyed(scheme: Scheme, value: str) -> tuple[list[str], str | None]:
    """`t=1492774577,v1=5257a8...,v0=6ffb...`: the entries under signature_key, and the one
    timestamp (two timestamps are refused: which one was signed?)."""
    signatures, timestamps = [], []
    for item in value.split(scheme.separator or ","):
        key, equals, text = item.strip().partition("=")
        if not equals:
            continue
        if key == scheme.signature_key:
            signatures.append(text)
        elif scheme.timestamp_key and key == scheme.timestamp_key:
            timestamps.append(text)
    if not signatures:
        raise SignatureError(f"No {scheme.signature_key}= signature in {scheme.header}.")
    if scheme.timestamp_key and len(timestamps) != 1:
        raise SignatureError(
            f"{scheme.header} must hold exactly one {scheme.timestamp_key}= timestamp."
        )
    return signatures, timestamps[0] if timestamps else None


def _decode(scheme: Scheme, text: str) -> bytes | None:
    """The MAC bytes, or None when the text is not one (wrong encoding or length)."""
    try:
        raw = (
            bytes.fromhex(text)
            if scheme.encoding == "hex"
            else base64.b64decode(text, validate=True)
        )
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == DIGEST_SIZES[scheme.algorithm] else None


def _timestamp(
    scheme: Scheme,
    from_list: str | None,
    headers: Mapping[str, str],
    tolerance_seconds: int,
    now: float,
) -> int | None:
    if not scheme.timestamped:
        return None
    where = scheme.timestamp_header or f"{scheme.timestamp_key}= in {scheme.header}"
    value = from_list if scheme.timestamp_key else headers.get(where.lower())
    if not value:
        raise SignatureError(f"Missing timestamp ({where}).")
    if not value.isascii() or not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS:
        raise SignatureError(f"Malformed timestamp ({where}).")
    timestamp = int(value)
    sent = timestamp / 1000 if scheme.timestamp_unit == "milliseconds" else timestamp
    if sent < now - tolerance_seconds:
        raise SignatureError("Timestamp too old (outside the source's tolerance).")
    if sent > now + tolerance_seconds:
        raise SignatureError("Timestamp too new (outside the source's tolerance).")
    return timestamp


def signature_headers(
    scheme: Scheme, secret: str, body: bytes, url: str, now: float
) -> dict[str, str]:
    """The signature (and timestamp) headers the sender would put on this body."""
    timestamp = None
    if scheme.timestamped:
        timestamp = str(int(now * 1000) if scheme.timestamp_unit == "milliseconds" else int(now))
    raw = digest(scheme, secret, body, url, timestamp)
    text = raw.hex() if scheme.encoding == "hex" else base64.b64encode(raw).decode()
    value = scheme.prefix + text
    if scheme.signature_key:
        entries = [f"{scheme.signature_key}={value}"]
        if scheme.timestamp_key:
            entries.insert(0, f"{scheme.timestamp_key}={timestamp}")
        value = (scheme.separator or ",").join(entries)
    headers = {scheme.header: value}
    if scheme.timestamp_header and timestamp is not None:
        headers[scheme.timestamp_header] = timestamp
    return headers
