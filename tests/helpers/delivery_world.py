"""The delivery test world: a migrated SQLite ledger, the Engage emulator over real HTTP, a
settable clock, and helpers to record decisions and read back what happened. Imported by the
delivery, failure and sweeper tests; the `delivery_world` fixture lives in
tests/unit/conftest.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from emulators.engage import EmulatorServer
from relay.config.settings import DeliverySettings, DestinationSettings
from relay.domain import Decision
from relay.ledger.models import DeadLetter, DeliveryAttempt, DeliveryState, Event, Outbox, utcnow
from relay.ledger.record import Recorded, record_decision
from workers.delivery.contact import DeliveryContext
from workers.destinations.engage import EngageClient

EMAIL = "Jane.Doe+tag@Example.com"
KEY = "jane.doe+tag@example.com"
DESTINATION = "engage"
SETTINGS = DeliverySettings(redispatch_after_seconds=30.0, lease_seconds=180)

State = Callable[[], dict[str, Any]]


@dataclass
class Ledger:
    """A migrated SQLite ledger (the `ledger` fixture in tests/unit/conftest.py)."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


@dataclass
class Clock:
    """A settable clock for DeliveryContext(clock=...)."""

    now: dt.datetime = field(default_factory=utcnow)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class DeliveryWorld:
    ledger: Ledger
    emulator: EmulatorServer
    state: State
    destination: Callable[..., DestinationSettings]
    _side_engines: list[Engine] = field(default_factory=list)

    def context(
        self,
        password: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        settings: DeliverySettings = SETTINGS,
        writer: Any = None,
    ) -> DeliveryContext:
        dest = self.destination() if password is None else self.destination(password=password)
        return DeliveryContext(
            self.ledger.sessions, {DESTINATION: writer or EngageClient(dest)}, settings, clock
        )

    def record(
        self,
        consent: str,
        occurred_at: dt.datetime | None = None,
        email: str = EMAIL,
        source_id: str | None = None,
        sessions: sessionmaker[Session] | None = None,
    ) -> Recorded:
        with (sessions or self.ledger.sessions)() as session:
            return record_decision(
                session,
                source_name="signup",
                delivery_id=f"msg_{uuid.uuid4().hex}",
                webhook_timestamp=int(utcnow().timestamp()),
                body_sha256=hashlib.sha256(consent.encode()).hexdigest(),
                decision=Decision(
                    email=email,
                    tracking_consent=consent,
                    source="registration_form",
                    source_id=source_id,
                    occurred_at=occurred_at,
                ),
                destinations=[DESTINATION],
            )

    def side_sessions(self) -> sessionmaker[Session]:
        """Sessions on a second engine with a short busy timeout and SQLite's default deferred
        transactions: another process's view of the ledger, failing fast instead of waiting 15 s
        when the write lock is taken."""
        engine = create_engine(self.ledger.url, connect_args={"timeout": 0.2})
        self._side_engines.append(engine)
        return sessionmaker(engine, expire_on_commit=False)

    def event_id(self, recorded: Recorded) -> int:
        with self.ledger.sessions() as session:
            return int(
                session.execute(
                    select(Event.id).where(Event.public_id == recorded.event_id)
                ).scalar_one()
            )

    def outbox(self, recorded: Recorded) -> Outbox:
        event_id = self.event_id(recorded)
        with self.ledger.sessions() as session:
            return session.execute(
                select(Outbox).where(Outbox.event_id == event_id, Outbox.destination == DESTINATION)
            ).scalar_one()

    def delivery_state(self, contact_id: int) -> DeliveryState | None:
        with self.ledger.sessions() as session:
            return session.get(DeliveryState, (DESTINATION, contact_id))

    def attempts(self, contact_id: int) -> list[DeliveryAttempt]:
        with self.ledger.sessions() as session:
            return list(
                session.scalars(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.contact_id == contact_id)
                    .order_by(DeliveryAttempt.id)
                )
            )

    def set_state(self, contact_id: int, **values: Any) -> None:
        with self.ledger.sessions() as session:
            exists = session.get(DeliveryState, (DESTINATION, contact_id))
            if exists is None:
                session.add(DeliveryState(destination=DESTINATION, contact_id=contact_id, **values))
            else:
                session.execute(
                    update(DeliveryState)
                    .where(
                        DeliveryState.destination == DESTINATION,
                        DeliveryState.contact_id == contact_id,
                    )
                    .values(**values)
                )
            session.commit()

    def requests(self) -> list[dict[str, Any]]:
        return list(self.state()["requests"])

    def engage_consent(self, key: str = KEY) -> str | None:
        contact = self.state()["contacts"].get(key)
        return None if contact is None else contact["attributes"]["tracking_consent"]

    def dead_letters(self) -> list[DeadLetter]:
        with self.ledger.sessions() as session:
            return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))

    def faults(self, **values: Any) -> None:
        """Turn emulator faults on or off through its control endpoint."""
        response = requests.put(f"{self.emulator.url}/_emulator/faults", json=values, timeout=5)
        assert response.status_code == 200, response.text


def hours_ago(hours: float) -> dt.datetime:
    return utcnow() - dt.timedelta(hours=hours)


@dataclass
class Published:
    calls: list[tuple[str, int]] = field(default_factory=list)
    urgent: list[tuple[str, int]] = field(default_factory=list)  # sent to the urgent lane

    def __call__(self, destination: str, contact_id: int, urgent: bool = False) -> None:
        self.calls.append((destination, contact_id))
        if urgent:
            self.urgent.append((destination, contact_id))
