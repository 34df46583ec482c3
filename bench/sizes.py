"""How big a run is: quick (`make bench`, a few minutes) or full (`make bench FULL=1`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

STATES = ("granted", "denied", "withdrawn", "unknown")
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
CONNECTIONS = 4  # closed loop: load processes, one connection each (2 cores, 2 gunicorn workers)
WIDE = 16  # closed loop, the wider load: the plain-Celery target is stated at 16 connections
OPEN_LOOP_RATE = 200.0  # requests/s offered in the open-loop run
INTAKE_CONTACTS = 500  # the intake bodies cycle over this many addresses


@dataclass(frozen=True)
class Sizes:
    name: str
    warmup: float  # seconds of load before the measured window (closed and open loop)
    duration: float  # measured seconds of each closed-loop run
    open_duration: float  # measured seconds of the open-loop run
    decisions: int  # rate-limited delivery run: decisions ...
    contacts: int  # ... over this many contacts
    unlimited_contacts: int  # unlimited delivery runs: one decision per contact
    capacity_seconds: float  # the emulator alone, per client count
    profile_requests: int  # signed requests through the in-process profile
    recovery_kills: int  # pool processes killed per backend in the recovery run


QUICK = Sizes("quick", 2, 4, 8, 300, 60, 60, 3, 300, 1)
FULL = Sizes("full", 3, 30, 30, 10_000, 2_000, 1_000, 15, 2_000, 3)


def decision_body(email: str, consent: str, occurred_at: dt.datetime, source_id: str) -> bytes:
    """The canonical payload (docs/sources/standard-webhooks.md)."""
    payload = {
        "email": email,
        "tracking_consent": consent,
        "source": "bench",
        "source_id": source_id,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(payload).encode()


def intake_email(i: int) -> str:
    return f"Bench.{i % INTAKE_CONTACTS}@Example.com"


def intake_bodies(count: int) -> list[bytes]:
    """`count` decisions cycling over INTAKE_CONTACTS addresses."""
    return [
        decision_body(
            intake_email(i), STATES[i % 4], T0 + dt.timedelta(milliseconds=i), f"intake-{i}"
        )
        for i in range(count)
    ]
