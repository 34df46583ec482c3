"""consent evidence on every event (notice, purposes, collection method, lawful basis,
jurisdiction, language); the tamper-evident chain per contact (its head on the contact, a link
on each event and erasure), erasures, and the record of chain verifications. Events recorded
before this revision are chained here, in their arrival order.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from alembic import op

from relay.ledger.chain import GENESIS

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EVIDENCE = (
    ("notice_version", sa.String(length=255)),
    ("notice_url", sa.String(length=2000)),
    ("purposes", sa.Text()),
    ("collection_method", sa.String(length=16)),
    ("lawful_basis", sa.String(length=32)),
    ("jurisdiction", sa.String(length=64)),
    ("language", sa.String(length=35)),
)


CHAIN = (
    ("chain_seq", sa.Integer()),
    ("chain_hash", sa.String(length=64)),
    ("subject_digest", sa.String(length=64)),
    ("subject_salt", sa.String(length=32)),
)


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, type_ in EVIDENCE + CHAIN:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("chain_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("chain_head", sa.String(length=64), nullable=False, server_default=GENESIS)
        )
        batch.add_column(sa.Column("erased_at", sa.DateTime(), nullable=True))
    _create_erasures()
    _create_verifications()
    _chain_existing_events()


def _create_erasures() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("public_id", sa.String(length=36), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("erased_at", sa.DateTime(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("pseudonymised", sa.Boolean(), nullable=False),
        sa.Column("settled_deliveries", sa.Integer(), nullable=False),
        sa.Column("chain_seq", sa.Integer(), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_erasures_contact_id_contacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
        sa.UniqueConstraint("public_id", name=op.f("uq_erasures_public_id")),
    )
    op.create_index(op.f("ix_erasures_contact_id"), "erasures", ["contact_id"], unique=False)


def _create_verifications() -> None:
    op.create_table(
        "chain_verifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("contacts", sa.Integer(), nullable=False),
        sa.Column("links", sa.Integer(), nullable=False),
        sa.Column("broken", sa.Integer(), nullable=False),
        sa.Column("first_break", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_verifications")),
    )
    op.create_index(
        op.f("ix_chain_verifications_finished_at"),
        "chain_verifications",
        ["finished_at"],
        unique=False,
    )


def _chain_existing_events() -> None:
    """Chain what was recorded before, each contact's events in arrival order (the content
    format of relay/ledger/chain.py, version 1). Plain SQL over the columns of this revision,
    so that a later revision's columns do not matter here."""
    from relay.domain import NO_EVIDENCE
    from relay.ledger import chain

    bind = op.get_bind()
    events = sa.table(
        "events",
        *(sa.column(name) for name in LEGACY_EVENT_COLUMNS),
        sa.column("chain_seq"),
        sa.column("chain_hash"),
        sa.column("subject_digest"),
        sa.column("subject_salt"),
    )
    contacts = sa.table(
        "contacts", sa.column("id"), sa.column("chain_seq"), sa.column("chain_head")
    )
    heads: dict[int, tuple[int, str]] = {}
    after = 0
    while True:
        rows = bind.execute(
            sa.select(*(events.c[name] for name in LEGACY_EVENT_COLUMNS))
            .where(events.c.id > after)
            .order_by(events.c.id)
            .limit(500)
        ).all()
        if not rows:
            break
        for row in rows:
            seq, head = heads.get(row.contact_id, (0, GENESIS))
            salt = chain.new_salt()
            digest = chain.subject_digest(salt, row.email)
            content = chain.decision_content(
                **_legacy_content(row), subject=digest, evidence=NO_EVIDENCE.as_json()
            )
            link = chain.link_hash(head, chain.content_hash(content))
            heads[row.contact_id] = (seq + 1, link)
            bind.execute(
                events.update()
                .where(events.c.id == row.id)
                .values(
                    chain_seq=seq + 1, chain_hash=link, subject_digest=digest, subject_salt=salt
                )
            )
        after = rows[-1].id
    for contact_id, (seq, head) in heads.items():
        bind.execute(
            contacts.update()
            .where(contacts.c.id == contact_id)
            .values(chain_seq=seq, chain_head=head)
        )


LEGACY_EVENT_COLUMNS = (
    "id",
    "public_id",
    "source_name",
    "delivery_id",
    "body_sha256",
    "contact_id",
    "email",
    "decision",
    "consent_source",
    "consent_source_id",
    "occurred_at",
    "occurred_at_given",
    "webhook_timestamp",
    "received_at",
)


def _legacy_content(row: Any) -> dict[str, Any]:
    return {
        "event_id": row.public_id,
        "source_name": row.source_name,
        "delivery_id": row.delivery_id,
        "payload_sha256": row.body_sha256,
        "decision": row.decision,
        "source": row.consent_source,
        "source_id": row.consent_source_id,
        "occurred_at": _utc(row.occurred_at),
        "occurred_at_given": bool(row.occurred_at_given),
        "webhook_timestamp": int(row.webhook_timestamp),
        "received_at": _utc(row.received_at),
    }


def _utc(value: Any) -> dt.datetime:
    """The ledger stores naive UTC (relay/ledger/models.py UTCDateTime); SQLite gives text."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC)


def downgrade() -> None:
    op.drop_index(op.f("ix_chain_verifications_finished_at"), table_name="chain_verifications")
    op.drop_table("chain_verifications")
    op.drop_index(op.f("ix_erasures_contact_id"), table_name="erasures")
    op.drop_table("erasures")
    with op.batch_alter_table("contacts") as batch:
        for name in ("erased_at", "chain_head", "chain_seq"):
            batch.drop_column(name)
    with op.batch_alter_table("events") as batch:
        for name, _type in reversed(EVIDENCE + CHAIN):
            batch.drop_column(name)
