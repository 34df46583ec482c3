"""Bearer-token checks for the admin API and /metrics: one place, constant time.

Both answer the same way: 403 when no token is configured (the endpoint is off), 401 with a
`WWW-Authenticate: Bearer` challenge when the token is missing or not one of the configured ones.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from flask import Response, request

from service.http.problems import problem


@dataclass(frozen=True)
class BearerGate:
    realm: str  # e.g. "consent-relay-admin"
    disabled_slug: str  # problem slug of the 403 when no token is configured
    disabled_title: str
    disabled_detail: str
    unauthorized_detail: str

    def refuse(self, tokens: Sequence[str]) -> tuple[Response, str] | None:
        """None when the request carries a configured token; else the problem to answer and
        why (for the caller's log line, which must never hold the token)."""
        if not tokens:
            answer = problem(403, self.disabled_slug, self.disabled_title, self.disabled_detail)
            return answer, "disabled"
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given = given.strip()
        missing = scheme.lower() != "bearer" or not given
        if not missing and known_token(given, tokens):
            return None
        challenge = f'Bearer realm="{self.realm}"'
        if not missing:
            challenge += ', error="invalid_token"'
        answer = problem(
            401,
            "unauthorized",
            "Unauthorized",
            self.unauthorized_detail,
            headers={"WWW-Authenticate": challenge},
        )
        return answer, "no bearer token" if missing else "unknown token"


def known_token(given: str, tokens: Sequence[str]) -> bool:
    # Constant-time comparisons against every token (no early exit), so the answer time says
    # nothing about how much of a token was right, nor which one matched.
    matches = [hmac.compare_digest(given.encode(), token.encode()) for token in tokens]
    return any(matches)
