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


def test_events_recorded_before_the_chain_are_chained_by_the_migration(tmp_path: Path) -> None:
    """Revision 0005 chains the events of an older ledger in arrival order (issue 17)."""
    from sqlalchemy import text

    from relay.ledger import chain_store
    from relay.ledger.db import make_session_factory

    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(engine, "0004")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO contacts (id, email_key, created_at)"
                " VALUES (1, 'a@example.com', '2026-01-01 00:00:00')"
            )
        )
        for index, decision in enumerate(["granted", "denied"], start=1):
            connection.execute(
                text(
                    "INSERT INTO events (public_id, source_name, delivery_id, body_sha256,"
                    " contact_id, email, decision, consent_source, consent_source_id,"
                    " occurred_at, occurred_at_given, webhook_timestamp, received_at)"
                    " VALUES (:p, 's', :d, :b, 1, 'A@example.com', :decision, 'form', NULL,"
                    " '2026-01-0' || :i || ' 10:00:00.123456', 1, 1767000000,"
                    " '2026-01-0' || :i || ' 10:00:01')"
                ),
                {
                    "p": f"legacy-{index}",
                    "d": f"d{index}",
                    "b": "0" * 64,
                    "decision": decision,
                    "i": index,
                },
            )
    upgrade(engine)
    with make_session_factory(engine)() as session:
        result = chain_store.verify(session, 1)
        assert (result.ok, result.links) == (True, 2)
        session.execute(text("UPDATE events SET decision = 'granted' WHERE public_id = 'legacy-2'"))
        session.commit()
        assert chain_store.verify(session, 1).breaks[1].seq == 2
