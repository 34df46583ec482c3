"""Fanning out the web's dispatch messages: one delivery task per (destination, contact).

Under load a web process publishes one message for everything its intake queued in the last
few milliseconds (service/intake/publisher.py), because building a Celery message costs more than
recording the decision. The first free worker turns it into the usual delivery tasks, so
deliveries still run in parallel on every worker.

One message may carry several webhooks' deliveries, each with its own trace: every entry gets
a span of its own in that trace, and the delivery task it publishes continues from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanKind

from relay.telemetry import tracing
from relay.telemetry.logs import get_logger

log = get_logger(__name__)
# destination, contact id, request id, traceparent
PublishDelivery = Callable[[str, int, str | None, str | None], None]
Entry = tuple[str, int, str | None, str | None]


def fan_out(deliveries: Any, publish: PublishDelivery) -> int:
    """Publish one delivery per well-formed [destination, contact id, request id, traceparent]
    entry (the traceparent may be missing); return how many. A malformed entry is logged and
    skipped: its outbox row stays pending, and the sweeper delivers it."""
    published = 0
    for entry in deliveries if isinstance(deliveries, list) else []:
        parsed = _parse(entry)
        if parsed is None:
            log.error("malformed dispatch entry skipped; the sweeper will deliver it")
            continue
        destination, contact_id, request_id, trace = parsed
        attributes = {
            "consent_relay.destination": destination,
            "consent_relay.contact_id": contact_id,
        }
        with tracing.span(
            "consent_relay.dispatch", kind=SpanKind.PRODUCER, parent=trace, attributes=attributes
        ):
            publish(destination, contact_id, request_id, tracing.traceparent() or trace)
        published += 1
    return published


def _parse(entry: Any) -> Entry | None:
    if not isinstance(entry, list | tuple) or len(entry) not in (3, 4):
        return None
    destination, contact_id, request_id, trace = (*entry, None)[:4]
    if not isinstance(destination, str) or type(contact_id) is not int:
        return None
    return destination, contact_id, _text(request_id), _text(trace)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
