"""Publishing delivery tasks from the web process, after the ledger commit.

Best effort by design: the outbox row is already committed, and beat's sweeper enqueues it if
this publish fails. When the broker is unreachable each attempt costs seconds of connection
timeouts, so after a failure the web process stops trying for a short while rather than slow
every webhook answer (senders time out after ~10 s: webhook-sources.md, Tally).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from celery import Celery

from service.logs import current_request_id, get_logger
from workers.names import DELIVER_TASK, REQUEST_ID_TASK_HEADER

log = get_logger(__name__)
DEFAULT_PAUSE_SECONDS = 15.0


class Publisher:
    def __init__(
        self,
        celery: Celery,
        pause_seconds: float = DEFAULT_PAUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._celery = celery
        self._pause = pause_seconds
        self._clock = clock
        self._paused_until = 0.0

    def publish(self, destination: str, contact_id: int, *, event_id: str | None = None) -> bool:
        """Enqueue one delivery; False when skipped or failed (the sweeper will deliver).

        The task carries ids only; the request id (when this runs in a request) rides along
        as a message header so the worker's log lines for this delivery carry it too."""
        where = {"destination": destination, "contact_id": contact_id, "event_id": event_id}
        if self._clock() < self._paused_until:
            log.info("broker paused after a failure; leaving it to the sweeper", **where)
            return False
        request_id = current_request_id()
        headers = {REQUEST_ID_TASK_HEADER: request_id} if request_id else None
        try:
            self._celery.send_task(
                DELIVER_TASK, args=[destination, contact_id], headers=headers, retry=False
            )
        except Exception:  # noqa: BLE001 - any broker error; the event is already committed
            self._paused_until = self._clock() + self._pause
            log.warning("enqueue failed; the sweeper will deliver", exc_info=True, **where)
            return False
        return True
