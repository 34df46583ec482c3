"""The tamper-evident chain of one contact's ledger records (docs/data-protection.md#chain).

Every decision, and every erasure, of a contact is a *link*: the SHA-256 of its canonical
content, chained to the previous link's hash, so that a changed, inserted, reordered or removed
record breaks every hash after it (docs/reference/consent-records.md#tamper-evidence). The
contact row keeps the head (last position and hash), so that removing the newest record is
detected as well.

The content holds no personal data: the address is represented by `subject_digest`, a SHA-256
over a random per-record salt and the address. Erasure deletes the salt and the address; the
digest stays, cannot be tied to anyone any more, and the chain still verifies.

This module is pure (no database): the ledger's verifier and the stand-alone verifier of an
exported file (`consent-relay ledger verify-export`) share it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # the "previous hash" of a contact's first link
HASH_ALGORITHM = "sha256"
CHAIN_VERSION = 1  # part of every content: a later format is told apart from this one


def canonical_json(content: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte sequence per content (RFC 8785 would also fix
    number formats; our contents hold only strings, integers, booleans, lists and nulls)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content)).hexdigest()


def link_hash(previous: str, content_digest: str) -> str:
    """SHA-256 over the previous link's hash and this content's hash (32 bytes each)."""
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(content_digest)).hexdigest()


def timestamp(value: dt.datetime) -> str:
    """A time as the chain writes it: UTC, microseconds, `Z` (what the ledger stores)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_salt() -> str:
    return secrets.token_hex(16)


def subject_digest(salt: str, email: str) -> str:
    """Stands for the address in the chain: without the salt it links to no one."""
    return hashlib.sha256(bytes.fromhex(salt) + email.encode("utf-8")).hexdigest()


def pseudonym(key: str, email_key: str) -> str:
    """A keyed pseudonym of a contact (HMAC-SHA-256): whoever holds the key can recognise the
    same person again; no one else can."""
    return hmac.new(key.encode(), email_key.encode("utf-8"), hashlib.sha256).hexdigest()


def decision_content(
    *,
    event_id: str,
    source_name: str,
    delivery_id: str,
    payload_sha256: str,
    subject: str,
    decision: str,
    source: str,
    source_id: str | None,
    occurred_at: dt.datetime,
    occurred_at_given: bool,
    webhook_timestamp: int,
    received_at: dt.datetime,
    evidence: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "v": CHAIN_VERSION,
        "type": "decision",
        "event_id": event_id,
        "source_name": source_name,
        "delivery_id": delivery_id,
        "payload_sha256": payload_sha256,
        "subject_digest": subject,
        "tracking_consent": decision,
        "source": source,
        "source_id": source_id,
        "occurred_at": timestamp(occurred_at),
        "occurred_at_given": occurred_at_given,
        "webhook_timestamp": webhook_timestamp,
        "received_at": timestamp(received_at),
        "evidence": dict(evidence),
    }


def erasure_content(
    *,
    erasure_id: str,
    erased_at: dt.datetime,
    requested_by: str,
    reason: str,
    decisions: int,
    pseudonymised: bool,
) -> dict[str, Any]:
    return {
        "v": CHAIN_VERSION,
        "type": "erasure",
        "erasure_id": erasure_id,
        "erased_at": timestamp(erased_at),
        "requested_by": requested_by,
        "reason": reason,
        "decisions": decisions,
        "pseudonymised": pseudonymised,
    }


@dataclass(frozen=True)
class Link:
    """One record as stored: its position and hash, its content, and for a decision whose
    subject is not erased the salt and address the digest must match."""

    seq: int | None
    ref: str  # "event <public id>" or "erasure <public id>"
    content: Mapping[str, Any]
    stored_hash: str | None
    salt: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Break:
    """The first broken link of a contact's chain, and why."""

    seq: int | None
    ref: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ref": self.ref, "reason": self.reason}


def verify_links(links: Sequence[Link], head_seq: int, head_hash: str) -> Break | None:
    """None when the links form the whole chain up to the head, else the first break."""
    unplaced = [item for item in links if item.seq is None or item.stored_hash is None]
    if unplaced:
        return Break(None, unplaced[0].ref, "not part of the chain (written outside the relay)")
    ordered = sorted(links, key=lambda item: (item.seq or 0, item.ref))
    previous = GENESIS
    for position, item in enumerate(ordered, start=1):
        found = _broken(item, position, previous, ordered)
        if found is not None:
            return found
        previous = item.stored_hash or ""
    if len(ordered) != head_seq or previous != head_hash:
        return Break(
            head_seq,
            "head",
            f"the chain ends at link {len(ordered)} but the contact's head is link {head_seq}"
            if len(ordered) != head_seq
            else "the contact's head hash does not match the last link",
        )
    return None


def _broken(item: Link, position: int, previous: str, ordered: Sequence[Link]) -> Break | None:
    if item.seq != position:
        missing = "missing" if (item.seq or 0) > position else "duplicated"
        return Break(position, item.ref, f"link {position} is {missing} (found {item.seq})")
    if link_hash(previous, content_hash(item.content)) != item.stored_hash:
        return Break(item.seq, item.ref, "content or order does not match the stored hash")
    if item.content.get("type") != "decision":
        return None
    if item.salt is not None and item.email is not None:
        if subject_digest(item.salt, item.email) != item.content.get("subject_digest"):
            return Break(item.seq, item.ref, "the address does not match the subject digest")
        return None
    erased_later = any(
        later.content.get("type") == "erasure" and (later.seq or 0) > position for later in ordered
    )
    if not erased_later:
        return Break(item.seq, item.ref, "the address was removed without an erasure record")
    return None
