"""What one process needs at run time, built once from the settings: engine, sessions, verifiers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import make_engine, make_session_factory
from service.sources import VERIFIERS
from service.sources.standard_webhooks import VerifiedDelivery

Verifier = Callable[[Mapping[str, str], bytes], VerifiedDelivery]


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    verifiers: Mapping[str, Verifier]

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        verifiers = {
            name: VERIFIERS[source.kind](source.secrets, source.timestamp_tolerance_seconds)
            for name, source in settings.sources.items()
        }
        return cls(settings, engine, make_session_factory(engine), verifiers)
