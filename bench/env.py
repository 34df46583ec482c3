"""The pieces a benchmark run starts: a source config, a throwaway PostgreSQL database, the
Engage emulator, gunicorn (the real app or a baseline) and the Celery worker and beat.

Everything is registered on an ExitStack, so processes stop and databases are dropped however
the run ends."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from bench.procs import Proc, answers, free_port, wait_for, wait_http
from relay.config.loader import web_concurrency as config_web_concurrency
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The Standard Webhooks docs test secret, as in the tests: the bench source signs with it.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105
ENGAGE_USER = "api-user@example.com"
ENGAGE_PASSWORD = "engage-demo-password"  # noqa: S105 - the emulator's demo credential
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"
REDIS_URL = "redis://127.0.0.1:6379/0"
REAL_APP = "service:create_app()"
Value = str | int | float


@dataclass(frozen=True)
class Backend:
    """Where the ledger and the broker live: embedded (SQLite, filesystem) or servers."""

    label: str
    postgres: bool
    redis: bool


EMBEDDED = Backend("SQLite + filesystem broker", postgres=False, redis=False)
PG_REDIS = Backend("PostgreSQL + Redis", postgres=True, redis=True)


@dataclass(frozen=True)
class Relay:
    """One configured relay: its config file, work folder and ledger URL."""

    config: Path
    workdir: Path
    database_url: str
    queue: str


def _toml(value: Value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def write_config(
    workdir: Path,
    engage_url: str,
    database_url: str | None,
    broker_url: str | None,
    delivery: Mapping[str, Value] | None = None,
    destination: Mapping[str, Value] | None = None,
    others: Mapping[str, Mapping[str, Value]] | None = None,
) -> Relay:
    """The same shape as the tests' config: one Engage destination, one source `signup`;
    `others`: more destinations (name -> table)."""
    queue = f"cr-bench-{uuid.uuid4().hex[:8]}"
    service = {"data_dir": str(workdir / "var"), "queue": queue}
    service |= {"database_url": database_url} if database_url else {}
    service |= {"broker_url": broker_url} if broker_url else {}
    engage: dict[str, Value] = {"kind": "mapp-engage", "base_url": engage_url}
    engage |= {"username": ENGAGE_USER, "password": ENGAGE_PASSWORD, **(destination or {})}
    sections: dict[str, Mapping[str, Value]] = {
        "service": service,
        "delivery": dict(delivery or {}),
        "destinations.engage": engage,
        **{f"destinations.{name}": table for name, table in (others or {}).items()},
        "sources.signup": {"kind": "standard-webhooks", "source": "registration_form"},
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
        lines += [f'secrets = ["{SECRET}"]'] if name.startswith("sources.") else []
        lines.append("")
    config = workdir / "consent-relay.toml"
    config.write_text("\n".join(lines))
    url = database_url or f"sqlite:///{workdir / 'var' / 'consent-relay.db'}"
    return Relay(config, workdir, url, queue)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (even when the run fails)."""
    name = f"consent_relay_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.format(name=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def drop_redis_keys(queue: str) -> None:
    """The queue's messages and the rate limiter's keys (all carry the queue name)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def relay(
    stack: contextlib.ExitStack,
    workdir: Path,
    backend: Backend,
    engage_url: str,
    delivery: Mapping[str, Value] | None = None,
    destination: Mapping[str, Value] | None = None,
    others: Mapping[str, Mapping[str, Value]] | None = None,
) -> Relay:
    """Config for `backend` (a fresh database when PostgreSQL), migrated."""
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = stack.enter_context(postgres_database()) if backend.postgres else None
    broker_url = REDIS_URL if backend.redis else None
    config = write_config(
        workdir, engage_url, database_url, broker_url, delivery, destination, others
    )
    if backend.redis:
        stack.callback(drop_redis_keys, config.queue)
    engine = make_engine(_normalised(config.database_url))
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return config


def _normalised(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _env(config: Relay, **extra: str) -> dict[str, str]:
    return {**os.environ, "CONSENT_RELAY_CONFIG": str(config.config), **extra}


def emulator(
    stack: contextlib.ExitStack, logdir: Path, name: str, *flags: str, command: str = "engage"
) -> str:
    """`<command>-emulator` (Engage, or a peer) in its own process; returns its base URL."""
    port = free_port()
    argv = [str(BIN / f"{command}-emulator"), "--port", str(port), *flags]
    proc = stack.enter_context(_stopping(Proc(name, argv, dict(os.environ), REPO, logdir)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_emulator/faults", proc, 30)
    return url


def gunicorn(stack: contextlib.ExitStack, config: Relay, app: str, name: str) -> tuple[Proc, str]:
    """gunicorn with the service's own settings (service/http/gunicorn_conf.py), on loopback."""
    port = free_port()
    argv = [str(BIN / "gunicorn"), "--config", "python:service.http.gunicorn_conf"]
    argv += ["--bind", f"127.0.0.1:{port}", app]
    env = _env(config, PORT=str(port))
    proc = stack.enter_context(_stopping(Proc(name, argv, env, REPO, config.workdir)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc, 60)
    wait_for(lambda: _all_workers_booted(proc), 30, f"{name} workers")
    return proc, url


def web_concurrency() -> int:
    """gunicorn's worker count, as service/http/gunicorn_conf.py sets it."""
    return config_web_concurrency(os.environ)


def _all_workers_booted(proc: Proc) -> bool:
    return proc.output().count("Booting worker") >= web_concurrency()


def celery(
    stack: contextlib.ExitStack,
    config: Relay,
    role: str,
    concurrency: int = 2,
    extra: tuple[str, ...] = (),
) -> Proc:
    """`celery -A workers.main worker|beat`, as in the Procfile (`extra`: more options)."""
    argv = [str(BIN / "python"), "-m", "celery", "-A", "workers.main", role, "--loglevel=INFO"]
    if role == "worker":
        argv += [f"--concurrency={concurrency}", "--without-gossip", "--without-mingle"]
    argv += list(extra)
    proc = stack.enter_context(_stopping(Proc(role, argv, _env(config), REPO, config.workdir)))
    proc.wait_output("ready." if role == "worker" else "beat: Starting", 60)
    return proc


@contextlib.contextmanager
def _stopping(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()


__all__ = ["EMBEDDED", "PG_REDIS", "Backend", "Relay", "answers", "relay"]
