"""ignored events: authenticated deliveries that carried no usable decision, and why

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ignored_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source_name", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ignored_events")),
        sa.UniqueConstraint("source_name", "delivery_id", name="uq_ignored_events_source_delivery"),
    )
    op.create_index("ix_ignored_events_received", "ignored_events", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ignored_events_received", table_name="ignored_events")
    op.drop_table("ignored_events")
