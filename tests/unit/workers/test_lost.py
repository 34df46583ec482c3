"""A lost pool process's leases: freed for exactly that run, then taken by the next writer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool
from kombu.utils.imports import symbol_by_name

from relay.ledger.models import utcnow
from tests.helpers.delivery_world import DESTINATION, DeliveryWorld
from tests.helpers.support import minimal_celery
from workers.delivery.contact import deliver_contact
from workers.lost import (
    MAINTAIN_POOL_SECONDS,
    PromptAsynPool,
    PromptTaskPool,
    free_leases_of,
    is_worker_lost,
    lease_owner,
)


def test_each_run_of_a_task_owns_its_leases_under_its_own_name() -> None:
    # A retry keeps the task id: the retry count tells the runs apart.
    assert lease_owner("abc", 0) != lease_owner("abc", 1)
    assert len(lease_owner("3b241101-e2bb-4255-8caf-4136c566a962", 10_000)) <= 64


def test_freeing_a_lost_run_frees_only_its_own_leases(delivery_world: DeliveryWorld) -> None:
    lost, alive = (
        delivery_world.record("denied"),
        delivery_world.record("granted", email="other@example.com"),
    )
    expires = utcnow() + dt.timedelta(seconds=180)
    delivery_world.set_state(
        lost.contact_id, lease_owner=lease_owner("t1", 0), lease_expires_at=expires
    )
    delivery_world.set_state(
        alive.contact_id, lease_owner=lease_owner("t1", 1), lease_expires_at=expires
    )

    with delivery_world.ledger.sessions() as session:
        assert free_leases_of(session, lease_owner("t1", 0)) == 1

    freed, held = (
        delivery_world.delivery_state(lost.contact_id),
        delivery_world.delivery_state(alive.contact_id),
    )
    assert freed is not None and freed.lease_owner is None and freed.lease_expires_at is None
    assert held is not None and held.lease_owner == lease_owner("t1", 1)


def test_a_freed_lease_is_delivered_at_once_not_after_the_lease(
    delivery_world: DeliveryWorld,
) -> None:
    recorded = delivery_world.record("withdrawn")
    expires = utcnow() + dt.timedelta(seconds=180)
    delivery_world.set_state(recorded.contact_id, lease_owner="dead/0", lease_expires_at=expires)
    assert (
        deliver_contact(delivery_world.context(), DESTINATION, recorded.contact_id, "w/0") == "busy"
    )

    with delivery_world.ledger.sessions() as session:
        free_leases_of(session, "dead/0")

    assert (
        deliver_contact(delivery_world.context(), DESTINATION, recorded.contact_id, "w/0")
        == "delivered"
    )
    assert delivery_world.engage_consent() == "withdrawn"


def test_a_lost_child_is_recognised_bare_or_as_the_pool_wraps_it() -> None:
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")
    assert is_worker_lost(lost)
    assert is_worker_lost(ExceptionWithTraceback(lost, "traceback"))
    assert not is_worker_lost(ExceptionWithTraceback(ValueError("x"), "traceback"))
    assert not is_worker_lost(TimeLimitExceeded(5))  # the lease outlives the hard limit


def test_the_worker_runs_a_pool_that_reports_a_lost_child_promptly(tmp_path: Path) -> None:
    # billiard marks a dead child's job lost only in a maintenance pass, which Celery's
    # AsynPool runs every 5 s: a kill was noticed up to 5 s late (workers/lost.py).
    celery = minimal_celery(tmp_path)
    pool = symbol_by_name(celery.conf.worker_pool)
    assert pool is PromptTaskPool and issubclass(pool, TaskPool)
    assert issubclass(pool.Pool, AsynPool)
    timers = PromptAsynPool.timers.fget(object.__new__(PromptAsynPool))
    assert list(timers.values()) == [MAINTAIN_POOL_SECONDS] and MAINTAIN_POOL_SECONDS <= 0.5
