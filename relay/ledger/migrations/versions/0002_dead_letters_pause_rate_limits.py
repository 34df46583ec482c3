"""dead letters, destination pause state, shared rate-limit slots

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("delivery_state") as batch:
        batch.add_column(sa.Column("rejections", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failing_since", sa.DateTime(), nullable=True))
    op.create_table(
        "dead_letters",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_body", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_dead_letters_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_dead_letters_event_id_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(
        "ix_dead_letters_status", "dead_letters", ["status", "destination", "created_at"]
    )
    op.create_index("ix_dead_letters_contact", "dead_letters", ["destination", "contact_id"])
    op.create_table(
        "destination_status",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("paused_at", sa.DateTime(), nullable=True),
        sa.Column("paused_by", sa.String(length=16), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_status", sa.Integer(), nullable=True),
        sa.Column("next_probe_at", sa.DateTime(), nullable=True),
        sa.Column("last_probe_at", sa.DateTime(), nullable=True),
        sa.Column("last_probe_error", sa.Text(), nullable=True),
        sa.Column("resumed_at", sa.DateTime(), nullable=True),
        sa.Column("resumed_by", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_destination_status")),
    )
    op.create_table(
        "rate_limits",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("next_slot", sa.Float(), nullable=False),
        sa.Column("penalty_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("destination", name=op.f("pk_rate_limits")),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.drop_table("destination_status")
    op.drop_index("ix_dead_letters_contact", table_name="dead_letters")
    op.drop_index("ix_dead_letters_status", table_name="dead_letters")
    op.drop_table("dead_letters")
    with op.batch_alter_table("delivery_state") as batch:
        batch.drop_column("failing_since")
        batch.drop_column("rejections")
