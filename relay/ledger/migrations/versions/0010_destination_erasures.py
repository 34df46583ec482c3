"""destination erasures: an erasure passed on to a destination's delete call
(docs/data-protection.md#at-destinations)

Revision ID: 0010
Revises: 0009
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "destination_erasures",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("erasure_id", BIG_ID, nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sealed_address", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["erasure_id"],
            ["erasures.id"],
            name=op.f("fk_destination_erasures_erasure_id_erasures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destination_erasures")),
        sa.UniqueConstraint(
            "erasure_id", "destination", name=op.f("uq_destination_erasures_erasure_id")
        ),
    )
    op.create_index(
        "ix_destination_erasures_erasure_id", "destination_erasures", ["erasure_id"], unique=False
    )
    op.create_index(
        "ix_destination_erasures_status", "destination_erasures", ["status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_destination_erasures_status", table_name="destination_erasures")
    op.drop_index("ix_destination_erasures_erasure_id", table_name="destination_erasures")
    op.drop_table("destination_erasures")
