"""The address removed from the ledger's free text by an erasure (relay/ledger/erasure.py): an
attempt's detail, a dead letter's detail and response excerpt, the last error."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.ledger.models import DeadLetter, DeliveryAttempt, DeliveryState

REDACTED = "[erased]"  # what replaces the address in free text


def redactor(addresses: Iterable[str]) -> Callable[[str | None], str | None]:
    """Replaces each address, in any letter case and as URL-encoded, by REDACTED."""
    variants = {form for a in addresses for form in (a, quote(a, safe=""), quote(a))}
    if not variants:
        return lambda text: text
    pattern = re.compile(
        "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)), re.I
    )
    return lambda text: None if text is None else pattern.sub(REDACTED, text)


def scrub_free_text(session: Session, contact_id: int, addresses: set[str]) -> None:
    scrub = redactor(addresses)
    texts = (
        (DeliveryAttempt, DeliveryAttempt.contact_id, ("detail",)),
        (DeadLetter, DeadLetter.contact_id, ("detail", "last_body")),
        (DeliveryState, DeliveryState.contact_id, ("last_error",)),
    )
    for model, owner, columns in texts:
        for row in session.scalars(select(model).where(owner == contact_id)):
            for column in columns:
                value = getattr(row, column)
                cleaned = scrub(value)
                if cleaned != value:
                    setattr(row, column, cleaned)
    session.flush()
