"""intake conflict function: lets the intake's one-statement write abort itself
(relay/ledger/record_pg.py), PostgreSQL only

The intake records a new decision in one statement, outside an explicit transaction, so that
it costs one round trip instead of three (BEGIN, the statement, COMMIT). A single statement is
atomic, but it cannot roll itself back when it finds, half-way, that another transaction
recorded the same delivery meanwhile: this function raises a serialization failure (SQLSTATE
40001), which aborts the statement with everything it wrote.

Revision ID: 0011
Revises: 0010
Create Date: 2027-02-08
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

CREATE = """
CREATE OR REPLACE FUNCTION consent_relay_conflict(reason text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = reason;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS consent_relay_conflict(text)")
