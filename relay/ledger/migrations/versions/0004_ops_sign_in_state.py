"""ops sign-in state: failed sign-ins per client and account (the throttle), and the
operator's session epoch (signing out ends every session)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ops_sign_in_failures",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("window_started", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ops_sign_in_failures")),
    )
    op.create_index(
        op.f("ix_ops_sign_in_failures_window_started"),
        "ops_sign_in_failures",
        ["window_started"],
        unique=False,
    )
    op.create_table(
        "ops_session_epochs",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_ops_session_epochs")),
    )


def downgrade() -> None:
    op.drop_table("ops_session_epochs")
    op.drop_index(op.f("ix_ops_sign_in_failures_window_started"), table_name="ops_sign_in_failures")
    op.drop_table("ops_sign_in_failures")
