"""The writer (destination client) of each configured destination, by its `kind`."""

from __future__ import annotations

from relay.config.settings import DestinationSettings
from schemas.destinations import ACOUSTIC, DOTDIGITAL, ENGAGE, MOENGAGE
from workers.delivery.contact import ConsentWriter
from workers.destinations.acoustic import AcousticClient
from workers.destinations.dotdigital import DotdigitalClient
from workers.destinations.engage import EngageClient
from workers.destinations.moengage import MoEngageClient
from workers.ratelimit.pace import Throttle

CLIENTS: dict[str, type[EngageClient | AcousticClient | DotdigitalClient | MoEngageClient]] = {
    ENGAGE: EngageClient,
    ACOUSTIC: AcousticClient,
    DOTDIGITAL: DotdigitalClient,
    MOENGAGE: MoEngageClient,
}


def build_writer(settings: DestinationSettings, throttle: Throttle | None = None) -> ConsentWriter:
    """The client of `settings.kind`, pacing every call with `throttle` (the shared limiter)."""
    return CLIENTS[settings.kind](settings, throttle=throttle)
