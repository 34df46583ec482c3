"""`kind = "token"`: the canonical payload from a sender that cannot sign (a Salesforce Flow
HTTP callout, Zapier, a script): a long random token in the URL (`?token=`), the
`X-Consent-Relay-Token` header or a Bearer header, or Basic auth when `username` is set
(docs/reference/sources/salesforce.md#flow-http-callouts). Compared in constant time against every
active secret.

No timestamp is signed, so a captured request can be replayed: duplicates are recognised by
the `Idempotency-Key` header when the sender sets one, otherwise by the body's SHA-256
(an identical body is the same decision). A malformed key (empty, over 255 characters, or
with control characters) is answered 400 once the token has been checked.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from service.sources.auth import check_token
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    PayloadError,
    SignedRequest,
    SourceEvent,
)
from service.sources.canonical import canonical_decision

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query string."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


class TokenKind(BaseKind):
    name: ClassVar[str] = "token"
    EVENTS: ClassVar[Mapping[str, str | None]] = {"decision": None}

    def authenticate(self, request: InboundRequest) -> Authenticated:
        check_token(request, self.secrets, self.source.options.get("username"))
        return Authenticated(delivery_id=request.header(IDEMPOTENCY_HEADER))

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        # A malformed key is a bad request (400), not a failed authentication: the token was
        # right, and a 401 would send the operator looking for a wrong secret.
        key = auth.delivery_id
        if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
            raise PayloadError("Malformed Idempotency-Key header.")
        decision = canonical_decision(request, self.source.source, self.max_future_skew)
        event_id = auth.delivery_id or "sha256:" + hashlib.sha256(request.body).hexdigest()
        return [SourceEvent(event_id, "decision", decision=decision)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        headers = {"Content-Type": content_type}
        username = self.source.options.get("username")
        if username is not None:
            pair = f"{username}:{self.secrets[0]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            return SignedRequest(url, headers, body)
        return SignedRequest(with_query(url, token=self.secrets[0]), headers, body)
