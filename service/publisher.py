"""Publishing delivery tasks from the web process, after the ledger commit.

Best effort by design: the outbox row is already committed, and beat's sweeper enqueues it if
this publish fails. When the broker is unreachable each attempt costs seconds of connection
timeouts, so after a failure the web process stops trying for a short while rather than slow
every webhook answer (senders time out after ~10 s: webhook-sources.md, Tally).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Celery

from workers.names import DELIVER_TASK

log = logging.getLogger(__name__)
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

    def publish(self, destination: str, contact_id: int) -> bool:
        """Enqueue one delivery; False when skipped or failed (the sweeper will deliver)."""
        if self._clock() < self._paused_until:
            log.info(
                "broker paused after a failure; leaving contact_id=%s to the sweeper", contact_id
            )
            return False
        try:
            self._celery.send_task(DELIVER_TASK, args=[destination, contact_id], retry=False)
        except Exception:  # noqa: BLE001 - any broker error; the event is already committed
            self._paused_until = self._clock() + self._pause
            log.warning(
                "enqueue failed; the sweeper will deliver contact_id=%s", contact_id, exc_info=True
            )
            return False
        return True
