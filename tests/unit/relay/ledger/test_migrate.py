"""The Alembic migrations build exactly the schema the models describe, and step down again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from relay.ledger.db import make_engine
from relay.ledger.migrate import is_current, upgrade
from relay.ledger.models import Base


def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert is_current(engine)


def test_each_revision_upgrades_from_the_previous_one(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(engine, "0001")
    assert "dead_letters" not in inspect(engine).get_table_names()
    assert not is_current(engine)
    upgrade(engine)
    assert {"dead_letters", "destination_status", "rate_limits"} <= set(
        inspect(engine).get_table_names()
    )
