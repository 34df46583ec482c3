"""Fanning out the web's dispatch messages: one delivery task per (destination, contact).

Under load a web process publishes one message for everything its intake queued in the last
few milliseconds (service/intake/publisher.py), because building a Celery message costs more than
recording the decision. The first free worker turns it into the usual delivery tasks, so
deliveries still run in parallel on every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.telemetry.logs import get_logger

log = get_logger(__name__)
PublishDelivery = Callable[[str, int, str | None], None]


def fan_out(deliveries: Any, publish: PublishDelivery) -> int:
    """Publish one delivery per well-formed [destination, contact id, request id] entry;
    return how many. A malformed entry is logged and skipped: its outbox row stays pending,
    and the sweeper delivers it."""
    published = 0
    for entry in deliveries if isinstance(deliveries, list) else []:
        parsed = _parse(entry)
        if parsed is None:
            log.error("malformed dispatch entry skipped; the sweeper will deliver it")
            continue
        publish(*parsed)
        published += 1
    return published


def _parse(entry: Any) -> tuple[str, int, str | None] | None:
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        return None
    destination, contact_id, request_id = entry
    if not isinstance(destination, str) or type(contact_id) is not int:
        return None
    return destination, contact_id, request_id if isinstance(request_id, str) else None
