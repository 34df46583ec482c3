"""Engine and sessions for the ledger: SQLite (WAL) by default, PostgreSQL through DATABASE_URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15000


def make_engine(database_url: str, *, pre_ping: bool = True, **kwargs: Any) -> Engine:
    """`pre_ping=False` saves a round trip per checkout; the caller then retries once when a
    statement fails on a connection the server closed (`DBAPIError.connection_invalidated`):
    SQLAlchemy then drops every older connection of the pool."""
    # Statement parameters carry e-mail addresses: keep them out of exception messages and logs.
    kwargs.setdefault("hide_parameters", True)
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=pre_ping, **kwargs)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=FULL")  # an accepted consent survives power loss
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front, so a read-then-write transaction waits on
    # busy_timeout instead of failing with "database is locked" when it upgrades its lock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def insert_ignoring_conflicts(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL (the two supported ledgers)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(model).values(rows).on_conflict_do_nothing())


def refused_values(exc: SQLAlchemyError) -> bool:
    """Whether the ledger refused the statement's values rather than being unreachable.

    A DataError (NUL in text, a value longer than its column, an integer out of range) or a
    value that could not even be bound (a StatementError without a driver error: an
    overflow converting a time to UTC) means the input got past validation, which is a bug
    to fix at the boundary, never "retry later": a retry of the same input fails the same
    way. Everything else (connection refused or closed, timeouts, a locked database) is the
    ledger being unavailable."""
    if isinstance(exc, DataError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)
