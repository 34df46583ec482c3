"""Fixtures for the real-parts tests: the Engage emulator over HTTP, and real services.

PostgreSQL, Redis and RabbitMQ: skipped with the reason locally when unreachable, a failure
when CI=true (see tests.helpers.support.require_service).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text

from emulators.engage import EmulatorServer, create_emulator_app
from tests.helpers.support import require_service

# Generated-input tests (hypothesis) stay bounded on a 2-core CI machine: few examples each,
# no per-example deadline (a first request may compile templates or open the database).
# `pytest --hypothesis-profile=deep` searches harder, by hand.
settings.register_profile(
    "consent-relay",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("deep", parent=settings.get_profile("consent-relay"), max_examples=1500)
settings.load_profile("consent-relay")

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="module")
def engage() -> Iterator[str]:
    """A running Engage emulator (real HTTP); yields its base URL."""
    with EmulatorServer(create_emulator_app()) as server:
        yield server.url


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards (connections included)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"consent_relay_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for each test module. Per module, not per session: a
    module that leaves pending decisions or held leases behind (a backlog stopped mid-drain,
    a killed worker), or records decisions for the same addresses (the vendors' fixtures),
    must not change what another module's worker delivers."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def own_postgres_url() -> Iterator[str]:
    """A database for this test alone: for tests that count every row of the ledger (what
    is delivered, which leases are held) while other parameters of the module ran before."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBIT_URL
