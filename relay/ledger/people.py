"""Finding one person in the ledger, by contact id or by address (the intake's identity)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.ledger.models import Contact
from schemas.consent import contact_key


def find_contact_id(session: Session, email: str) -> int | None:
    """The contact id of an address, compared as the intake compares it (unique index)."""
    key = contact_key(email)
    if not key:
        return None
    return session.scalar(select(Contact.id).where(Contact.email_key == key))


def chosen_contact(session: Session, contact_id: int | None, email: str | None) -> int | None:
    """The id of the chosen contact when it exists, else None."""
    if email is not None:
        return find_contact_id(session, email)
    if contact_id is not None and session.get(Contact, contact_id) is not None:
        return contact_id
    return None
