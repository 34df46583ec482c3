"""One person's record, for proof of consent (GDPR Art. 7(1)) and access requests (Art. 15):
every decision with its evidence, what each destination was sent and answered, every erasure,
and the chain values to verify it offline (docs/data-protection.md#export).

Each decision of the JSON export *is* its chain content (relay/ledger/chain.py) plus a few
keys that are not hashed (`EXTRA_KEYS`), so `verify_export` recomputes every link from the
file alone: an edited field breaks it.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.ledger import chain, destination_erasures
from relay.ledger.chain_store import erasure_content, event_content
from relay.ledger.models import Contact, DeliveryAttempt, Erasure, Event, Outbox, utcnow

FORMAT = "consent-relay-record/1"
# Keys of an exported decision or erasure that are not part of its chain content.
EXTRA_KEYS = frozenset(
    {
        "chain_seq",
        "chain_hash",
        "email",
        "subject_salt",
        "deliveries",
        "settled_deliveries",
        "destinations",
    }
)
CSV_COLUMNS = (
    "chain_seq",
    "type",
    "event_id",
    "occurred_at",
    "received_at",
    "tracking_consent",
    "source",
    "source_id",
    "source_name",
    "delivery_id",
    "payload_sha256",
    "email",
    *("notice_version", "notice_url", "purposes", "collection_method"),
    *("lawful_basis", "jurisdiction", "language"),
    "deliveries",
    "chain_hash",
)


def export_record(session: Session, contact_id: int) -> dict[str, Any] | None:
    """The contact's record as a JSON-ready dict, or None when there is no such contact."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return None
    events = list(session.scalars(select(Event).where(Event.contact_id == contact_id)))
    deliveries = _deliveries(session, contact_id, {event.id: event.public_id for event in events})
    links = [_decision(event, deliveries.get(event.id, [])) for event in events]
    erasures = list(session.scalars(select(Erasure).where(Erasure.contact_id == contact_id)))
    passed_on = destination_erasures.statuses(session, [erasure.id for erasure in erasures])
    links += [
        {
            **erasure_content(erasure),
            "chain_seq": erasure.chain_seq,
            "chain_hash": erasure.chain_hash,
            "settled_deliveries": erasure.settled_deliveries,
            "destinations": passed_on[erasure.id],  # each delete call passed on, and its state
        }
        for erasure in erasures
    ]
    links.sort(key=lambda link: link["chain_seq"] or 0)
    return {
        "format": FORMAT,
        "exported_at": chain.timestamp(utcnow()),
        "contact": {
            "contact_id": contact.id,
            "identifier": None if contact.erased_at else contact.email_key,
            "created_at": chain.timestamp(contact.created_at),
            "erased_at": chain.timestamp(contact.erased_at) if contact.erased_at else None,
        },
        "chain": {
            "algorithm": chain.HASH_ALGORITHM,
            "genesis": chain.GENESIS,
            "head_seq": contact.chain_seq,
            "head_hash": contact.chain_head,
        },
        "decisions": [link for link in links if link["type"] == "decision"],
        "erasures": [link for link in links if link["type"] == "erasure"],
    }


def _decision(event: Event, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **event_content(event),
        "email": event.email if event.subject_salt else None,
        "subject_salt": event.subject_salt,
        "chain_seq": event.chain_seq,
        "chain_hash": event.chain_hash,
        "deliveries": deliveries,
    }


def _deliveries(
    session: Session, contact_id: int, public: Mapping[int, str]
) -> dict[int, list[dict[str, Any]]]:
    """Per event: each destination's outbox row and the attempts made for that decision."""
    attempts: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    rows = select(DeliveryAttempt).where(DeliveryAttempt.contact_id == contact_id)
    for attempt in session.scalars(rows.order_by(DeliveryAttempt.id)):
        attempts[(attempt.event_id, attempt.destination)].append(
            {
                "started_at": chain.timestamp(attempt.started_at),
                "finished_at": chain.timestamp(attempt.finished_at),
                "outcome": attempt.outcome,
                "http_status": attempt.http_status,
                "detail": attempt.detail,
            }
        )
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    outbox = select(Outbox).where(Outbox.contact_id == contact_id).order_by(Outbox.id)
    for row in session.scalars(outbox):
        found[row.event_id].append(
            {
                "destination": row.destination,
                "status": row.status,
                "settled_at": chain.timestamp(row.settled_at) if row.settled_at else None,
                "settled_by": public.get(row.settled_by_event_id or 0),
                "attempts": attempts.get((row.event_id, row.destination), []),
            }
        )
    return found


def as_csv(record: Mapping[str, Any]) -> str:
    """One row per decision and per erasure, in chain order (for people and spreadsheets;
    verify the JSON export, not this)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    links = sorted(
        [*record["decisions"], *record["erasures"]], key=lambda link: link["chain_seq"] or 0
    )
    for link in links:
        row = {key: link.get(key) for key in CSV_COLUMNS}
        row.update({key: _cell(value) for key, value in (link.get("evidence") or {}).items()})
        row["event_id"] = link.get("event_id") or link.get("erasure_id")
        row["occurred_at"] = link.get("occurred_at") or link.get("erased_at")
        row["deliveries"] = "; ".join(_delivery_cell(item) for item in link.get("deliveries", []))
        writer.writerow({key: _safe(value) for key, value in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    return ";".join(value) if isinstance(value, list) else value


def _delivery_cell(item: Mapping[str, Any]) -> str:
    last = item["attempts"][-1] if item["attempts"] else None
    answer = f" {last['outcome']} {last['http_status'] or '-'}" if last else ""
    return f"{item['destination']}: {item['status']}{answer} at {item['settled_at'] or '-'}"


def _safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def verify_export(record: Mapping[str, Any]) -> chain.Break | None:
    """Check an exported JSON record without the database: every link recomputed from the
    file's own fields, up to the head it names. None when intact."""
    if record.get("format") != FORMAT:
        return chain.Break(None, "format", f"not a {FORMAT} export")
    links = [_link(item, "event") for item in record.get("decisions", [])]
    links += [_link(item, "erasure") for item in record.get("erasures", [])]
    head = record.get("chain", {})
    return chain.verify_links(links, int(head.get("head_seq", -1)), str(head.get("head_hash")))


def _link(item: Mapping[str, Any], kind: str) -> chain.Link:
    content = {key: value for key, value in item.items() if key not in EXTRA_KEYS}
    return chain.Link(
        item.get("chain_seq"),
        f"{kind} {item.get(f'{kind}_id')}",
        content,
        item.get("chain_hash"),
        salt=item.get("subject_salt"),
        email=item.get("email"),
    )
