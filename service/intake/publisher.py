"""Publishing delivery tasks from the web process, after the ledger commit: `Publisher` sends
(the admin's replay uses it directly), `BackgroundPublisher` batches the intake's.

Best effort by design: the outbox row is already committed, and beat's sweeper enqueues it if
this publish fails. When the broker is unreachable each attempt costs seconds of connection
timeouts, so after a failure the web process stops trying for a short while rather than slow
every webhook answer (senders time out after ~10 s: docs/reference/sources/tally.md#retries).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from structlog.contextvars import bound_contextvars

from relay.messaging.messages import Message, delivery_message
from relay.messaging.names import DISPATCH_TASK, ERASE_AT_DESTINATION_TASK
from relay.telemetry import tracing
from relay.telemetry.logs import current_request_id, get_logger

log = get_logger(__name__)
DEFAULT_PAUSE_SECONDS = 15.0
DEFAULT_CAPACITY = 50_000  # deliveries queued in memory at most; beyond, the sweeper's
MAX_BATCH = 500  # deliveries in one dispatch message at most
DEFAULT_INTERVAL_SECONDS = 0.05  # between two messages of one web process


class Publisher:
    def __init__(
        self,
        celery: Celery,
        pause_seconds: float = DEFAULT_PAUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._celery = celery
        self._base: str = celery.conf.task_default_queue
        self._pause = pause_seconds
        self._clock = clock
        self._paused_until = 0.0

    def publish(self, destination: str, contact_id: int, *, event_id: str | None = None) -> bool:
        """Enqueue one delivery; False when skipped or failed (the sweeper will deliver).

        The task carries ids only; the request id (when this runs in a request) rides along
        as a message header so the worker's log lines for this delivery carry it too, and so
        does the current trace (relay/telemetry/tracing.py)."""
        where = {"destination": destination, "contact_id": contact_id, "event_id": event_id}
        if self._clock() < self._paused_until:
            log.info("broker paused after a failure; leaving it to the sweeper", **where)
            return False
        request_id, trace = current_request_id(), tracing.traceparent()
        message = delivery_message(self._base, destination, contact_id, request_id, trace=trace)
        return self._send(message, where)

    def publish_erasures(self, forwarded: Sequence[tuple[int, str]]) -> int:
        """One task per destination an erasure is passed on to (ids only), after the erasure's
        commit; what is not sent, the sweeper publishes (relay/ledger/destination_erasures.py)."""
        if self._clock() < self._paused_until:
            return 0
        return sum(
            self._send((ERASE_AT_DESTINATION_TASK, [row_id], None, None), {"destination": name})
            for row_id, name in forwarded
        )

    def publish_queued(self, items: Sequence[Queued]) -> int:
        """Enqueue what the background publisher collected: each urgent delivery (a
        withdrawal or denial) as its own task in its urgent lane; of the rest, a single one as
        its delivery task, more as one dispatch task that the first free worker fans out
        (workers/tasks.py). Return how many messages were sent (0 when paused or failed: the
        sweeper delivers)."""
        if not items or self._clock() < self._paused_until:
            return 0
        urgent = [i for i in items if i.urgent]
        bulk = [i for i in items if not i.urgent]
        messages = [self._single(i) for i in urgent]
        if len(bulk) == 1:
            messages.append(self._single(bulk[0]))
        elif bulk:
            deliveries = [_entry(i) for i in bulk]
            messages.append((DISPATCH_TASK, [deliveries], None, None))
        return sum(self._send(message, {"count": len(items)}) for message in messages)

    def _single(self, item: Queued) -> Message:
        return delivery_message(
            self._base, item.destination, item.contact_id, item.request_id, item.urgent, item.trace
        )

    def _send(self, message: Message, where: dict[str, Any]) -> bool:
        """Send one message; a failure pauses publishing (each try against a dead broker costs
        seconds of connection timeouts)."""
        name, args, headers, queue = message
        try:
            self._celery.send_task(name, args=args, headers=headers, queue=queue, retry=False)
        except Exception:  # noqa: BLE001 - any broker error; the events are already committed
            self._paused_until = self._clock() + self._pause
            log.warning("enqueue failed; the sweeper will deliver", exc_info=True, **where)
            return False
        return True


@dataclass(frozen=True)
class Queued:
    """One delivery waiting for the background publisher: ids only, as on the broker."""

    destination: str
    contact_id: int
    request_id: str | None = None
    urgent: bool = False  # a withdrawal or denial: its own message, in its urgent lane
    trace: str | None = None  # the intake span's `traceparent` (none when not traced)


class BackgroundPublisher:
    """The intake's enqueue, off the request path.

    Publishing a Celery message costs several times the ledger write it follows (Celery builds
    the message, kombu a Redis client: bench/results/intake-profile.txt). The webhook's answer
    needs neither, because the committed outbox row is the guarantee (warehouse's "enqueue
    after commit"; beat's sweeper re-sends whatever is not delivered). So the request only
    queues (destination, contact id) in memory, and one thread per process publishes at most
    one message per interval: what queued meanwhile, once per contact however many of its
    decisions are waiting (delivery is state-based: workers/delivery.py). What is still
    queued when the process dies is left to the sweeper, like a failed publish.
    """

    def __init__(
        self,
        publisher: Publisher,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ):
        self._publisher = publisher
        self._capacity = capacity
        self._interval = interval
        self._lock = threading.Lock()
        self._pid = -1
        self._queue: queue.Queue[Queued | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, destination: str, contact_id: int, urgent: bool = False) -> bool:
        """Queue one delivery; False when the queue is full (the sweeper will deliver)."""
        self._ensure_thread()
        if self._queue.qsize() >= self._capacity:
            log.warning("publish queue full; leaving it to the sweeper", contact_id=contact_id)
            return False
        # The trace is taken here, in the request: the thread that publishes has none.
        queued = Queued(
            destination, contact_id, current_request_id(), urgent, tracing.traceparent()
        )
        self._queue.put(queued)
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was handled; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for at most `timeout` seconds) and stop the thread."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        self._queue.put(None)
        thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:  # first use in this process (gunicorn forks workers after import)
            if self._pid == os.getpid():
                return
            self._queue = queue.Queue()
            self._thread = threading.Thread(
                target=self._run, name="consent-relay-publisher", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()
            atexit.register(self.close)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            items = _coalesced([i for i in batch if i is not None])
            try:
                with bound_contextvars(**_common_request_id(items)):
                    self._publisher.publish_queued(items)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if None in batch:
                return
            # At most one message per interval: what queues meanwhile shares the next one,
            # so under load the broker cost per webhook shrinks instead of growing.
            time.sleep(self._interval)

    def _next_batch(self) -> list[Queued | None]:
        batch = [self._queue.get()]
        while len(batch) < MAX_BATCH and batch[-1] is not None:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch


def _entry(item: Queued) -> list[Any]:
    """A dispatch entry keeps its own request id and, when traced, its own traceparent
    (workers/delivery/fanout.py). Untraced, it stays three long, as workers before traces
    read it."""
    entry: list[Any] = [item.destination, item.contact_id, item.request_id]
    return [*entry, item.trace] if item.trace else entry


def _common_request_id(items: Sequence[Queued]) -> dict[str, str]:
    """Log lines while publishing one request's deliveries carry its request id."""
    ids = {item.request_id for item in items}
    request_id = ids.pop() if len(ids) == 1 else None
    return {"request_id": request_id} if request_id else {}


def _coalesced(items: Sequence[Queued]) -> list[Queued]:
    """One message per (destination, contact): the worker delivers the contact's latest."""
    seen: dict[tuple[str, int], Queued] = {}
    for item in items:
        seen.setdefault((item.destination, item.contact_id), item)
    return list(seen.values())
