"""The intake's hot path on PostgreSQL: one decision recorded in one statement.

The general path (relay/ledger/record.py) takes five ORM statements per decision: look for the
duplicate, look the contact up, insert it when new, read its id, insert the event and flush
the outbox rows. Profiled under load that was most of a webhook's cost
(bench/results/intake-profile.txt). Here data-modifying CTEs do all of it in one round trip,
sent below the ORM (the statement text is fixed, so there is nothing to compile).

A delivery of one decision (nearly all of them) runs in autocommit: the statement is its own
transaction, so BEGIN and COMMIT cost no round trips of their own (one instead of three).
That is safe because the statement writes nothing at all unless it inserts the event:

- the delivery id already recorded (a duplicate): `fresh` is false, so the contact is
  neither created nor moved, and no event is inserted;
- another transaction created the contact meanwhile (invisible to our snapshot): the
  contact insert does nothing, so there is no contact row to insert the event for;
- another transaction recorded the same delivery id meanwhile (a sender retrying while its
  first attempt is still in flight): our UPDATE waited for that transaction's row lock and
  moved the contact's chain, then the event insert did nothing. The last SELECT calls
  `consent_relay_conflict()` (migration 0011), which raises a serialization failure and so
  aborts the statement with everything it wrote.

In each case the caller gets None and takes the general path, which tells them apart. A
delivery of several decisions runs them in one explicit transaction, rolled back the same
way. It runs on a pooled driver connection of its own, outside the ORM session and
SQLAlchemy's Connection: their bookkeeping cost as much as the statement.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg.errors import SerializationFailure
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, StatementError

from relay.domain import Decision
from relay.ledger.chain import (
    GENESIS,
    content_hash,
    decision_content,
    link_hash,
    new_salt,
    subject_digest,
)
from relay.ledger.models import evidence_columns, utcnow
from schemas.consent import contact_key

RECORD_DECISION = """
WITH fresh AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM events
        WHERE source_name = %(source_name)s AND delivery_id = %(delivery_id)s
    ) AS ok
), found AS (
    SELECT id FROM contacts WHERE email_key = %(email_key)s
), made AS (
    INSERT INTO contacts (email_key, created_at, chain_seq, chain_head)
    SELECT %(email_key)s, %(now)s, 1, %(first_link)s
    WHERE NOT EXISTS (SELECT 1 FROM found) AND (SELECT ok FROM fresh)
    ON CONFLICT (email_key) DO NOTHING
    RETURNING id, chain_seq, chain_head
), moved AS (
    UPDATE contacts SET chain_seq = contacts.chain_seq + 1, chain_head = encode(
        sha256(decode(contacts.chain_head, 'hex') || decode(%(content_hash)s, 'hex')), 'hex')
    WHERE id IN (SELECT id FROM found) AND (SELECT ok FROM fresh)
    RETURNING id, chain_seq, chain_head
), contact AS (
    SELECT id, chain_seq, chain_head FROM made
    UNION ALL SELECT id, chain_seq, chain_head FROM moved
), event AS (
    INSERT INTO events (
        public_id, source_name, delivery_id, body_sha256, contact_id, email, decision,
        consent_source, consent_source_id, occurred_at, occurred_at_given, webhook_timestamp,
        received_at, notice_version, notice_url, purposes, collection_method, lawful_basis,
        jurisdiction, language, chain_seq, chain_hash, subject_digest, subject_salt
    )
    SELECT %(public_id)s, %(source_name)s, %(delivery_id)s, %(body_sha256)s, contact.id,
        %(email)s, %(decision)s, %(consent_source)s, %(consent_source_id)s, %(occurred_at)s,
        %(occurred_at_given)s, %(webhook_timestamp)s, %(now)s, %(notice_version)s,
        %(notice_url)s, %(purposes)s, %(collection_method)s, %(lawful_basis)s,
        %(jurisdiction)s, %(language)s, contact.chain_seq, contact.chain_head,
        %(subject_digest)s, %(subject_salt)s
    FROM contact
    ON CONFLICT (source_name, delivery_id) DO NOTHING
    RETURNING id, contact_id
), outbox AS (
    INSERT INTO outbox (event_id, destination, contact_id, status, created_at)
    SELECT event.id, name, event.contact_id, 'pending', %(now)s
    FROM event CROSS JOIN unnest(CAST(%(destinations)s AS text[])) AS name
)
SELECT contact_id FROM event
UNION ALL
SELECT consent_relay_conflict('delivery recorded meanwhile by another transaction')
FROM contact WHERE NOT EXISTS (SELECT 1 FROM event)
"""


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """What models.UTCDateTime stores: naive UTC (this statement bypasses its bind hook)."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def record_new_decisions(
    engine: Engine,
    *,
    source_name: str,
    webhook_timestamp: int,
    body_sha256: str,
    decisions: Sequence[tuple[str, Decision]],
    destinations: Sequence[str],
) -> list[tuple[str, int]] | None:
    """Record each (delivery id, decision) with its contact and outbox rows, all in one
    transaction: [(event public id, contact id)]. None, and nothing written, when any of them
    was not inserted (see the module text). One decision: the statement is the transaction."""
    now = utcnow()
    delivery = {
        "now": _naive_utc(now),
        "source_name": source_name,
        "body_sha256": body_sha256,
        "webhook_timestamp": webhook_timestamp,
        "destinations": list(destinations),
    }
    recorded = []
    connection: Any = None
    try:
        connection = engine.raw_connection()
        connection.dbapi_connection.autocommit = len(decisions) == 1  # atomic on its own
        cursor = connection.cursor()
        for delivery_id, decision in decisions:
            public_id = str(uuid.uuid4())
            params = {**delivery, **_decision_params(decision, now), "public_id": public_id}
            params["delivery_id"] = delivery_id
            params.update(_chain_params(params, now))
            cursor.execute(RECORD_DECISION, params)
            row = cursor.fetchone()
            if row is None:
                connection.rollback()
                return None
            recorded.append((public_id, row[0]))
        connection.commit()
    except SerializationFailure:  # consent_relay_conflict(): nothing of it was written
        connection.rollback()
        return None
    except engine.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(engine, connection, exc) from exc
    finally:
        if connection is not None:
            _back_to_pool(connection)
    return recorded


def _back_to_pool(connection: Any) -> None:
    """Return the connection as the pool handed it out: in transaction mode (the ORM's
    sessions share this pool), rolled back if anything is left open."""
    driver = connection.dbapi_connection
    if driver is not None and not driver.closed:
        with contextlib.suppress(Exception):  # a broken one is dropped by the pool's reset
            driver.autocommit = False
    connection.close()


def _wrapped(engine: Engine, connection: Any, exc: Any) -> StatementError:
    """The driver's error as SQLAlchemy would raise it (a DBAPIError; no parameters shown:
    they carry addresses). A connection the server closed is dropped, with every other
    connection of the pool, so the caller's retry gets a new one."""
    if connection is None:  # could not connect at all: nothing to drop, nothing to retry
        return DBAPIError.instance(
            None, None, exc, engine.dialect.loaded_dbapi.Error, hide_parameters=True
        )
    disconnect = engine.dialect.is_disconnect(exc, connection.dbapi_connection, None)
    if disconnect:
        connection.invalidate(exc)
        engine.dispose(close=False)  # the others are as stale; never reused
    return DBAPIError.instance(
        RECORD_DECISION,
        None,
        exc,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=disconnect,
        dialect=engine.dialect,
    )


def _chain_params(params: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The link of this event (relay/ledger/chain.py): its content's hash, and its hash when it
    is the contact's first link (the statement chains it to the head otherwise, in SQL, with the
    contact row locked by the UPDATE)."""
    salt = new_salt()
    digest = subject_digest(salt, params["email"])
    content = decision_content(
        event_id=params["public_id"],
        source_name=params["source_name"],
        delivery_id=params["delivery_id"],
        payload_sha256=params["body_sha256"],
        subject=digest,
        decision=params["decision"],
        source=params["consent_source"],
        source_id=params["consent_source_id"],
        occurred_at=params["occurred_at"].replace(tzinfo=dt.UTC),
        occurred_at_given=params["occurred_at_given"],
        webhook_timestamp=params["webhook_timestamp"],
        received_at=now,
        evidence=params["evidence"],
    )
    own = content_hash(content)
    return {
        "subject_salt": salt,
        "subject_digest": digest,
        "content_hash": own,
        "first_link": link_hash(GENESIS, own),
    }


def _decision_params(decision: Decision, now: dt.datetime) -> dict[str, Any]:
    return {
        "email_key": contact_key(decision.email),
        "email": decision.email,
        "decision": decision.tracking_consent,
        "consent_source": decision.source,
        "consent_source_id": decision.source_id,
        # No decision time in the payload: the time of first receipt stands in; never the
        # webhook timestamp, which is the attempt time
        # (docs/reference/standard-webhooks.md#the-specification).
        "occurred_at": _naive_utc(decision.occurred_at or now),
        "occurred_at_given": decision.occurred_at is not None,
        **evidence_columns(decision.evidence),
        "evidence": decision.evidence.as_json(),
    }
