"""Value types shared by the web, the ledger and the workers.

They live here, not in the module that first used them, so that a parser does not import the
SQL writer for `Decision` and a peer client does not import the Engage client for
`ConsentWrite`.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """A validated canonical decision, ready for the ledger."""

    email: str
    tracking_consent: str
    source: str
    source_id: str | None
    occurred_at: dt.datetime | None


@dataclass(frozen=True)
class ConsentWrite:
    email: str  # as sent by the source; Engage receives the address unchanged
    tracking_consent: str
    source: str
    source_id: str | None
    occurred_at: dt.datetime | None = None  # when the person decided (evidence for peers)


class Verdict(enum.Enum):
    """What a destination's HTTP answer means, as its client classifies it (one enum for
    Engage and the peers; each client uses the members its API can answer)."""

    OK = "ok"
    NOT_FOUND = "not_found"
    MISCONFIGURED = "misconfigured"
    REJECTED = "rejected"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    TRANSIENT = "transient"
    CONTACT_MISSING = "contact_missing"  # Engage: 400 NO_SUCH_OBJECT, create the contact
    CONTACT_EXISTS = "contact_exists"  # Engage: create lost the race to another writer
