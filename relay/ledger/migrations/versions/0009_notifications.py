"""notifications: operational events and their sends to webhook targets
(docs/operations/notifications.md)

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("fanned_out_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_fanned_out_at", "notifications", ["fanned_out_at"], unique=False
    )
    op.create_table(
        "notification_sends",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("notification_id", BIG_ID, nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_sends_notification_id_notifications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_sends")),
    )
    op.create_index(
        "ix_notification_sends_due",
        "notification_sends",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_notification_sends_due", table_name="notification_sends")
    op.drop_table("notification_sends")
    op.drop_index("ix_notifications_fanned_out_at", table_name="notifications")
    op.drop_table("notifications")
