"""Value types shared by the web, the ledger and the workers.

They live here, not in the module that first used them, so that a parser does not import the
SQL writer for `Decision` and a peer client does not import the Engage client for
`ConsentWrite`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Evidence:
    """What a data-protection officer needs to show how consent was given (GDPR Art. 7(1)),
    named after ISO/IEC TS 27560 and the Kantara consent receipt
    (docs/reference/consent-records.md#the-fields). Every field is optional."""

    notice_version: str | None = None
    notice_url: str | None = None
    purposes: tuple[str, ...] = ()
    collection_method: str | None = None
    lawful_basis: str | None = None
    jurisdiction: str | None = None
    language: str | None = None

    def as_json(self) -> dict[str, object]:
        """Every field, `None` or `[]` when absent (the ledger's and the export's shape)."""
        return {
            "notice_version": self.notice_version,
            "notice_url": self.notice_url,
            "purposes": list(self.purposes),
            "collection_method": self.collection_method,
            "lawful_basis": self.lawful_basis,
            "jurisdiction": self.jurisdiction,
            "language": self.language,
        }

    def merged(self, defaults: Evidence) -> Evidence:
        """These fields, each absent one taken from `defaults` (the source's config)."""
        return Evidence(
            notice_version=self.notice_version or defaults.notice_version,
            notice_url=self.notice_url or defaults.notice_url,
            purposes=self.purposes or defaults.purposes,
            collection_method=self.collection_method or defaults.collection_method,
            lawful_basis=self.lawful_basis or defaults.lawful_basis,
            jurisdiction=self.jurisdiction or defaults.jurisdiction,
            language=self.language or defaults.language,
        )


NO_EVIDENCE = Evidence()
EVIDENCE_FIELDS = tuple(NO_EVIDENCE.as_json())


def evidence_of(values: Mapping[str, Any]) -> Evidence:
    """The evidence fields of a loaded payload (or a ledger row's), the others ignored."""
    purposes = values.get("purposes") or ()
    return Evidence(
        notice_version=values.get("notice_version"),
        notice_url=values.get("notice_url"),
        purposes=tuple(str(purpose) for purpose in purposes),
        collection_method=values.get("collection_method"),
        lawful_basis=values.get("lawful_basis"),
        jurisdiction=values.get("jurisdiction"),
        language=values.get("language"),
    )


@dataclass(frozen=True)
class Decision:
    """A validated canonical decision, ready for the ledger."""

    email: str
    tracking_consent: str
    source: str
    source_id: str | None
    occurred_at: dt.datetime | None
    evidence: Evidence = NO_EVIDENCE


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
