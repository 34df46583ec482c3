"""The kept bodies of ignored events (docs/data-protection.md#reprocess): with `[retention]
keep_ignored_bodies_days`, the request an event was ignored in is kept, encrypted with
`[privacy] ignored_bodies_key` (Fernet: AES-128-CBC with HMAC-SHA-256, from the `cryptography`
package), so that it can be run through a fixed mapping later; retention removes it when it
expires. It is personal data (an address, answers), hence encrypted at rest and short-lived.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.errors import RelayError
from relay.ledger.models import IgnoredEvent


class KeptBodyUnreadableError(RelayError):
    """A kept body that the configured key cannot decrypt (the key changed): left as it is."""

    outcome = "unreadable"


def seal(key: str, envelope: dict[str, Any]) -> str:
    return Fernet(key.encode()).encrypt(json.dumps(envelope).encode()).decode()


def open_sealed(key: str, token: str) -> dict[str, Any]:
    try:
        opened: dict[str, Any] = json.loads(Fernet(key.encode()).decrypt(token.encode()))
    except InvalidToken as exc:
        raise KeptBodyUnreadableError("the kept body cannot be decrypted with this key") from exc
    return opened


def keep(
    session: Session,
    source_name: str,
    delivery_ids: Iterable[str],
    token: str,
    until: dt.datetime,
) -> int:
    """Attach the sealed request to its ignored events (first receipt only); the caller commits."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    kept = session.execute(
        update(IgnoredEvent)
        .where(
            IgnoredEvent.source_name == source_name,
            IgnoredEvent.delivery_id.in_(ids),
            IgnoredEvent.kept_body.is_(None),
        )
        .values(kept_body=token, kept_until=until)
    )
    return int(getattr(kept, "rowcount", 0))


def reprocessable(
    session: Session, now: dt.datetime, source_name: str | None = None
) -> list[IgnoredEvent]:
    query = select(IgnoredEvent).where(
        IgnoredEvent.kept_body.is_not(None), IgnoredEvent.kept_until > now
    )
    if source_name is not None:
        query = query.where(IgnoredEvent.source_name == source_name)
    return list(session.scalars(query.order_by(IgnoredEvent.id)))
