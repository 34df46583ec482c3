"""Value types shared by the web, the ledger and the workers.

They live here, not in the module that first used them, so that a parser does not import the
SQL writer for `Decision` and a peer client does not import the Engage client for
`ConsentWrite`.
"""

from __future__ import annotations

import datetime as dt
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
