"""A pool process that dies in the middle of a delivery frees its leases at once.

A delivery task holds its contacts' leases (workers/delivery.py) for at most `lease_seconds`
(180 s by default). When a prefork child is killed (SIGKILL, the OOM killer, a segfault in a
driver), nothing in it runs again, so its leases used to be waited out: every contact it held
stood still for three minutes.

The worker's main process learns of the loss: billiard reports the job with WorkerLostError
once the child has exited and `worker_lost_wait` has passed, and Celery calls the task's
Request.on_failure in the main process (Celery's documented hook for this: "Custom request
classes", https://docs.celeryq.dev/en/stable/userguide/tasks.html#requests-and-custom-requests).
There we free exactly the leases of that run and send the work again. No second writer can
appear: the run is identified by its lease owner (task id and retry count, see `lease_owner`),
and the process that held it has exited, so nothing can still write under it.

billiard marks the job lost only in a pool maintenance pass after `worker_lost_wait`, and
Celery's AsynPool runs that pass every 5 s (`AsynPool.timers`); the pass run when the child's
exit is seen is too early. So a loss was noticed 1-5 s after the kill (4.5 s measured on
Redis). `PromptTaskPool` runs the pass every `MAINTAIN_POOL_SECONDS`: the pass only checks
the children's exit codes and the lost jobs' clocks, so it is cheap.
"""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool
from celery.worker.request import Request
from sqlalchemy import update
from sqlalchemy.orm import Session

from relay.ledger.models import DeliveryState
from relay.messaging.lanes import recovery_queue
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from workers.delivery.context import delivery_context

log = get_logger(__name__)

MAINTAIN_POOL_SECONDS = 0.25


class PromptAsynPool(AsynPool):
    """Celery's AsynPool, maintained often enough to report a lost child within a
    fraction of a second after `worker_lost_wait`."""

    @property
    def timers(self) -> dict[Any, float]:
        return {self.maintain_pool: MAINTAIN_POOL_SECONDS}


class PromptTaskPool(TaskPool):
    Pool = PromptAsynPool


def lease_owner(task_id: str, retries: int) -> str:
    """The lease owner of one run of a task. A retry keeps the task id (Celery re-sends the
    same id), so the count tells the runs apart: freeing a lost run's leases can never free
    the leases of a later run of the same task."""
    return f"{task_id}/{retries}"


def free_leases_of(session: Session, owner: str) -> int:
    """Release every lease held by `owner`; returns how many were held."""
    freed = session.execute(
        update(DeliveryState)
        .where(DeliveryState.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None, dispatched_at=None)
    )
    session.commit()
    return int(getattr(freed, "rowcount", 0) or 0)


def is_worker_lost(exc: BaseException | None) -> bool:
    """The pool reports a lost child's job wrapped (billiard's ExceptionWithTraceback)."""
    return isinstance(getattr(exc, "exc", exc), WorkerLostError)


class LeaseFreeingRequest(Request):
    """The delivery tasks' request: on a lost pool process, free the run's leases first, then
    let Celery settle the message (RabbitMQ re-queues it; other brokers get it re-sent)."""

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        if is_worker_lost(exc_info.exception):
            self._recover_lost_run()
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )

    def _recover_lost_run(self) -> None:
        app, owner = self.task.app, lease_owner(self.id, int(self.request_dict.get("retries", 0)))
        try:
            with delivery_context(app).sessions() as session:
                freed = free_leases_of(session, owner)
            if not self.task.reject_on_worker_lost:  # else the broker re-delivers it
                app.send_task(self.name, args=self.args, kwargs=self.kwargs, queue=self._lane())
        except Exception:  # noqa: BLE001 - the lease still expires; the sweeper re-sends
            log.exception("could not recover a lost delivery run", task=self.name)
            return
        metrics.count_lost_run(self.name.rsplit(".", 1)[-1])
        log.warning("pool process lost: leases freed, work re-sent", task=self.name, freed=freed)

    def _lane(self) -> str:
        """The lost runs' own queue: their contacts are the most overdue work there is, and at
        the end of a lane they would wait behind its whole backlog (workers/routing.py)."""
        return recovery_queue(self.task.app.conf.task_default_queue)
