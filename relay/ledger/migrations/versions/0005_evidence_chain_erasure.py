"""consent evidence on every event (notice, purposes, collection method, lawful basis,
jurisdiction, language)

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

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


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, type_ in EVIDENCE:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, _type in reversed(EVIDENCE):
            batch.drop_column(name)
