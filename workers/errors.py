"""One typed error hierarchy for destination writes. The delivery loop only sees these."""

from __future__ import annotations

BODY_EXCERPT = 500


class DeliveryError(Exception):
    """A write did not succeed. `outcome` names the class in the ledger's attempt log."""

    outcome = "failed"

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = (body or "")[:BODY_EXCERPT]

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        excerpt = f": {self.body}" if self.body else ""
        return f"{self.args[0]}{status}{excerpt}"


class TransientError(DeliveryError):
    """5xx, 408, timeouts, connection errors: retry with backoff."""

    outcome = "transient"


class RateLimitedError(TransientError):
    """Engage answers HTTP 500 "Database Access Limit Exceeded" (destinations.md §1.4)."""

    outcome = "rate_limited"


class NotVisibleError(TransientError):
    """NO_SUCH_OBJECT right after a create: Engage persists writes asynchronously
    (destinations.md §1.2, contact/checkUpdateVersion), so the contact appears shortly."""

    outcome = "not_visible"


class AuthError(DeliveryError):
    """401, 403, 417 (account expired): the credentials or the account need an operator."""

    outcome = "auth"


class RejectedError(DeliveryError):
    """The destination refused the request itself (a 400 other than a missing contact)."""

    outcome = "rejected"
