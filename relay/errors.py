"""The one error root. Every error class of relay/, service/ and workers/ descends from
`RelayError` and says what it means by class attributes, not by where it is caught:

- `http_status`: what the web answers when the error reaches a request (service/http/problems.py
  turns a `ProblemError` into an RFC 9457 problem document from its class attributes);
- `outcome`: the label a delivery records in the ledger's attempt log and in the metrics
  (workers/destinations/errors.py, workers/ratelimit/pace.py).

Errors of libraries (marshmallow's ValidationError, SQLAlchemy's) are mapped where they enter:
schemas/ imports nothing of ours, so it cannot raise these. Tests walk every module and check
that each exception class descends from here and carries one of the two
(tests/unit/relay/test_errors.py).
"""

from __future__ import annotations

from typing import Any, ClassVar


class RelayError(Exception):
    """Root of every error we define. A class sets `http_status`, `outcome`, or both."""

    http_status: ClassVar[int | None] = None
    outcome: ClassVar[str | None] = None


class ProblemError(RelayError):
    """An error the web answers as a problem document: `http_status`, `slug` and `title` come
    from the class, the detail (the message) and any extra members from the instance.

    `reason` labels the refusal in the intake's metrics (`consent_relay_intake_total`)."""

    http_status: ClassVar[int | None] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal Server Error"
    reason: ClassVar[str] = "error"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ):
        super().__init__(detail if detail is not None else self.title)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra
