"""Shared checks for senders that cannot sign: a long random token, or HTTP Basic auth.

Jotform, ActiveCampaign and Paperform can only carry a secret in the URL; Dataverse sends a
header or `?code=`; Pipedrive and Salesforce Flow callouts use Basic auth
(docs/reference/sources/jotform.md, docs/reference/sources/salesforce.md#flow-http-callouts,
docs/reference/sources/pipedrive.md, docs/reference/sources/dynamics.md). Every comparison is
constant-time and fails closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from service.sources.base import InboundRequest, SignatureError

TOKEN_HEADER = "x-consent-relay-token"  # noqa: S105 (a header name, not a secret)
# `code` is Dataverse's WebhookKey (docs/reference/sources/dynamics.md)
TOKEN_QUERY = ("token", "code")


def matches_any(offered: str, secrets: Iterable[str]) -> bool:
    """Constant-time against every active secret (no early exit reveals which one matched).

    Both sides are hashed first so that compare_digest sees equal lengths."""
    offered_digest = hashlib.sha256(offered.encode()).digest()
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(offered_digest, hashlib.sha256(secret.encode()).digest())
    return found


def require_signature(
    offered: str, expected: Iterable[str], message: str = "No signature matches an active secret."
) -> None:
    """The offered signature against each expected one (one per active secret, or per signed
    variant), constant-time and with no early exit that would reveal which one matched."""
    offered_bytes = offered.encode()
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(candidate.encode(), offered_bytes)
    if not matched:
        raise SignatureError(message)


def offered_tokens(request: InboundRequest) -> list[str]:
    """Every place a token may be: `?token=`/`?code=`, the token header, a Bearer header."""
    offered = [request.query[name] for name in TOKEN_QUERY if request.query.get(name)]
    header = request.header(TOKEN_HEADER)
    if header:
        offered.append(header)
    authorization = request.header("authorization") or ""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        offered.append(credentials.strip())
    return offered


def basic_credentials(request: InboundRequest) -> tuple[str, str] | None:
    authorization = request.header("authorization") or ""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise SignatureError("Malformed Basic authorization header.") from None
    user, separator, password = decoded.partition(":")
    if not separator:
        raise SignatureError("Malformed Basic authorization header.")
    return user, password


def check_basic(request: InboundRequest, username: str, secrets: Iterable[str]) -> None:
    credentials = basic_credentials(request)
    if credentials is None:
        raise SignatureError("Missing Basic authorization header.")
    user, password = credentials
    user_ok = matches_any(user, [username])
    if not (matches_any(password, secrets) & user_ok):
        raise SignatureError("Basic credentials do not match.")


def check_token(request: InboundRequest, secrets: Iterable[str], username: str | None) -> None:
    """A token anywhere it may be sent, or (when a username is configured) Basic auth whose
    password is one of the secrets."""
    active = tuple(secrets)
    if username is not None and basic_credentials(request) is not None:
        check_basic(request, username, active)
        return
    offered = offered_tokens(request)
    if not offered:
        raise SignatureError("Missing token (query `token`, X-Consent-Relay-Token or Bearer).")
    if not any(matches_any(token, active) for token in offered):
        raise SignatureError("Token does not match an active secret.")
