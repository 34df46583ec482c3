"""The ledger's engine and sessions for one process, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from relay.config.settings import Settings
from relay.ledger.db import make_engine, make_session_factory


@dataclass
class LedgerRuntime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def build(cls, settings: Settings, *, pre_ping: bool = True) -> LedgerRuntime:
        engine = make_engine(settings.database_url, pre_ping=pre_ping)
        return cls(settings, engine, make_session_factory(engine))
