"""The messages the web, the CLI and the workers publish: built here, sent by task name.

A delivery task carries ids only as arguments; the intake request's id, when there is one,
travels as a message header for the worker's log lines, and the trace context as a W3C
`traceparent` header (relay/telemetry/tracing.py).
"""

from __future__ import annotations

from typing import Any

from relay.messaging.lanes import delivery_queue
from relay.messaging.names import DELIVER_TASK, REQUEST_ID_TASK_HEADER
from relay.telemetry.tracing import TRACEPARENT

# task name, args, headers, queue (None: the base queue)
Message = tuple[str, list[Any], dict[str, str] | None, str | None]


def delivery_message(
    base: str,
    destination: str,
    contact_id: int,
    request_id: str | None,
    urgent: bool = False,
    trace: str | None = None,
) -> Message:
    """The delivery task for one contact, in its destination's lane (relay/messaging/lanes.py):
    ids only as arguments; the intake request's id and the trace's `traceparent`, when there
    are, as message headers."""
    values = {REQUEST_ID_TASK_HEADER: request_id, TRACEPARENT: trace}
    headers = {key: value for key, value in values.items() if value} or None
    queue = delivery_queue(base, destination, urgent)
    return DELIVER_TASK, [destination, contact_id], headers, queue
