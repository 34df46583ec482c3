"""What one process needs at run time, built once from the settings: engine, sessions, and
each configured source's kind bound to its secrets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from relay.config.settings import Settings
from relay.ledger.db import make_engine, make_session_factory
from service.sources import SourceKind, build_kind


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    kinds: Mapping[str, SourceKind]

    @classmethod
    def build(cls, settings: Settings, *, pre_ping: bool = True) -> Runtime:
        engine = make_engine(settings.database_url, pre_ping=pre_ping)
        skew = dt.timedelta(seconds=settings.max_future_skew_seconds)
        kinds = {name: build_kind(source, skew) for name, source in settings.sources.items()}
        return cls(settings, engine, make_session_factory(engine), kinds)
