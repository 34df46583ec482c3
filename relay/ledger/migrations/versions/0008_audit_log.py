"""audit and retention: the operator audit log and its chain head
(docs/data-protection.md#audit-log), the record of retention runs (#retention), and the
kept bodies of ignored events (#reprocess)

Revision ID: 0008
Revises: 0007
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "audit_entries",
        sa.Column("id", big_id, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=500), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_entries_seq")),
    )
    op.create_index(op.f("ix_audit_entries_at"), "audit_entries", ["at"], unique=False)
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("head", sa.String(length=64), server_default=GENESIS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "retention_runs",
        sa.Column("id", big_id, nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("pruned", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    op.create_index(
        op.f("ix_retention_runs_finished_at"), "retention_runs", ["finished_at"], unique=False
    )
    with op.batch_alter_table("ignored_events") as batch:
        batch.add_column(sa.Column("kept_body", sa.Text(), nullable=True))
        batch.add_column(sa.Column("kept_until", sa.DateTime(), nullable=True))
        batch.create_index(batch.f("ix_ignored_events_kept_until"), ["kept_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ignored_events") as batch:
        batch.drop_index(batch.f("ix_ignored_events_kept_until"))
        batch.drop_column("kept_until")
        batch.drop_column("kept_body")
    op.drop_index(op.f("ix_retention_runs_finished_at"), table_name="retention_runs")
    op.drop_table("retention_runs")
    op.drop_table("audit_head")
    op.drop_index(op.f("ix_audit_entries_at"), table_name="audit_entries")
    op.drop_table("audit_entries")
