"""verifications: the last read-back of each contact's consent at each destination

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("seen", sa.String(length=64), nullable=True),
        sa.Column("checked_at", sa.DateTime(), nullable=True),
        sa.Column("verified_at", sa.DateTime(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(), nullable=True),
        sa.Column("drifts", sa.Integer(), nullable=False),
        sa.Column("last_drift_at", sa.DateTime(), nullable=True),
        sa.Column("last_drift_seen", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_verifications_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_verifications_event_id_events")
        ),
        sa.PrimaryKeyConstraint("destination", "contact_id", name=op.f("pk_verifications")),
    )
    op.create_index(
        "ix_verifications_due", "verifications", ["destination", "checked_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_verifications_due", table_name="verifications")
    op.drop_table("verifications")
