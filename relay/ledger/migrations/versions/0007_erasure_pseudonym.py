"""erasure: the keyed pseudonym of an erased contact (docs/data-protection.md#erasure)

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("pseudonym", sa.String(length=64), nullable=True))
        batch.create_index(batch.f("ix_contacts_pseudonym"), ["pseudonym"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_index(batch.f("ix_contacts_pseudonym"))
        batch.drop_column("pseudonym")
