"""The server-side state of the /ops sign-in, in the ledger (every web process shares it):

- a throttle on failed sign-ins, per client address and per account, in fixed windows;
- the operator's session epoch: a session cookie names the epoch it was signed in under,
  and signing out moves the epoch on, which ends every session signed in before.

The ledger, not Redis, because the ledger is always there and shared, whatever the broker
(the `limits` library has no SQL storage); sign-ins are rare, so one small upsert each is
cheap. The upsert is atomic on both SQLite and PostgreSQL (INSERT ... ON CONFLICT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.ledger.models import OpsSessionEpoch, SignInFailures

WINDOW_SECONDS = 15 * 60
# OWASP's Authentication Cheat Sheet asks for a throttle, not a lockout that anybody can
# trigger: one client gets a handful of tries per window; the account (attempts from every
# address together) more, so that a distributed guesser is slowed without locking the
# operator out for long (at most one window).
CLIENT_LIMIT = 10
ACCOUNT_LIMIT = 50
OTHER_ACCOUNT = "account:*"  # every wrong user name shares one key: the table stays small


@dataclass(frozen=True)
class Refusal:
    scope: str  # client | account
    retry_after: int  # seconds


def keys_for(client: str, account: str | None) -> dict[str, str]:
    """The throttle keys of one attempt; `account` None when the user name is not ours."""
    return {
        "client": f"client:{client}"[:128],
        "account": f"account:{account}"[:128] if account is not None else OTHER_ACCOUNT,
    }


def refusal(session: Session, keys: dict[str, str], now: float) -> Refusal | None:
    """Whether this attempt must wait, and how long (the longest of the keys' waits)."""
    limits = {"client": CLIENT_LIMIT, "account": ACCOUNT_LIMIT}
    rows = session.execute(
        select(SignInFailures.key, SignInFailures.window_started, SignInFailures.failures).where(
            SignInFailures.key.in_(keys.values())
        )
    ).all()
    found = {row.key: row for row in rows}
    waits = []
    for scope, key in keys.items():
        row = found.get(key)
        ends = row.window_started + WINDOW_SECONDS if row else 0.0
        if row is not None and ends > now and row.failures >= limits[scope]:
            waits.append(Refusal(scope, max(1, math.ceil(ends - now))))
    return max(waits, key=lambda r: r.retry_after, default=None)


def record_failure(session: Session, keys: dict[str, str], now: float) -> None:
    """One more failure on each key; an expired window starts again at one. Rows of windows
    long gone are removed on the way (the table holds only live windows)."""
    session.execute(
        delete(SignInFailures).where(SignInFailures.window_started < now - WINDOW_SECONDS)
    )
    for key in keys.values():
        _upsert_failure(session, key, now)


def _upsert_failure(session: Session, key: str, now: float) -> None:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(SignInFailures).values(key=key, window_started=now, failures=1)
    table = SignInFailures.__table__.c
    expired = table.window_started <= now - WINDOW_SECONDS
    statement = insert.on_conflict_do_update(
        index_elements=[table.key],
        set_={
            "failures": case((expired, 1), else_=table.failures + 1),
            "window_started": case((expired, now), else_=table.window_started),
        },
    )
    session.execute(statement)


def clear(session: Session, key: str) -> None:
    """A successful sign-in forgets its client's failures (not the account's)."""
    session.execute(delete(SignInFailures).where(SignInFailures.key == key))


def current_epoch(session: Session, username: str) -> int:
    epoch = session.scalar(
        select(OpsSessionEpoch.epoch).where(OpsSessionEpoch.username == username)
    )
    return int(epoch or 0)


def end_all_sessions(session: Session, username: str) -> None:
    """Move the account's epoch on: every cookie signed in under an earlier one is void."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(OpsSessionEpoch).values(username=username, epoch=1)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[OpsSessionEpoch.__table__.c.username],
            set_={"epoch": OpsSessionEpoch.__table__.c.epoch + 1},
        )
    )
