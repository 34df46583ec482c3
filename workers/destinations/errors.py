"""One typed error hierarchy for destination writes. The delivery loop only sees these."""

from __future__ import annotations

from relay.errors import RelayError

BODY_EXCERPT = 500


class DeliveryError(RelayError):
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
    """Engage answers HTTP 500 "Database Access Limit Exceeded"
    (docs/reference/engage.md#rate-limits)."""

    outcome = "rate_limited"


class NotVisibleError(TransientError):
    """NO_SUCH_OBJECT right after a create: Engage persists writes asynchronously
    (docs/reference/engage.md#endpoints, contact/checkUpdateVersion), so the contact appears
    shortly."""

    outcome = "not_visible"


class AuthError(DeliveryError):
    """401, 403, 417 (account expired): the credentials or the account need an operator."""

    outcome = "auth"


class RejectedError(DeliveryError):
    """The destination refused the request itself (a 400 other than a missing contact)."""

    outcome = "rejected"


class NotFoundError(RejectedError):
    """A peer does not hold the contact: Acoustic `CONTACT_NOT_FOUND_BY_KEY` (
    docs/reference/acoustic.md#errors), Dotdigital 404 `contacts:contactNotFound`
    (docs/reference/dotdigital.md#errors), MoEngage 400 "No users found"
    (docs/reference/moengage.md#responses-and-errors). The relay never creates a peer contact (that
    would opt the person in to e-mail: docs/reference/acoustic.md#implicit-opt-in,
    docs/reference/dotdigital.md#consent-values), so this is retried like a rejection (the contact
    may be added meanwhile), then dead-lettered as `not_found`; replay it once the contact
    exists."""

    outcome = "not_found"


class MisconfiguredError(DeliveryError):
    """The destination lacks something our configuration names, such as the custom field of
    attribute mode. No retry can help: dead-lettered at once as `misconfigured`, with the
    response; replay once the field is defined."""

    outcome = "misconfigured"


class BatchPartialError(TransientError):
    """A batch write was applied to fewer contacts than it carried, and the answer does not
    say which (Acoustic: per-contact errors are UNVERIFIED, docs/reference/acoustic.md#errors). Each
    contact of the batch is written again on its own."""

    outcome = "batch_partial"
