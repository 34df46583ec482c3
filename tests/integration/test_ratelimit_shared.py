"""One pace shared by several OS processes, as Celery worker processes on several machines
share Engage's per-account limit (docs/reference/engage.md#rate-limits).

Four spawned processes race for slots on the same backend at 20/s with no headroom. The
assertion is on the reserved slots, which the limiter controls: sorted, consecutive slots are
at least one interval apart, so no 1-second window holds more than 20. Observed send times
also carry scheduler jitter, so they are only checked to be no earlier than their slot.
Without a shared backend each process would hand out the same slots and the spacing fails.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.config.loader import normalise_database_url
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from workers.ratelimit.backends import DatabaseBackend, RedisBackend, redis_client
from workers.ratelimit.pace import Backend, DestinationThrottle, Pace

pytestmark = pytest.mark.integration

PROCESSES = 4
PER_PROCESS = 8
RATE = 20.0
PACE = Pace.for_rate(RATE, headroom=0.0)
# Slots are stored with microsecond precision (Redis as "%.6f", PostgreSQL float8).
EPSILON = 1e-5


def _open(spec: dict[str, str]) -> Backend:
    if spec["kind"] == "redis":
        return RedisBackend(redis_client(spec["url"]), spec["namespace"])
    return DatabaseBackend(make_engine(spec["url"]))


def _race(spec: dict[str, str], destination: str, barrier: Any, results: Any, index: int) -> None:
    """Child process: connect, wait for the others, then take PER_PROCESS paced slots."""
    backend = _open(spec)
    backend.reserve(f"{destination}-warm-up", PACE)  # connect before the race starts
    throttle = DestinationThrottle(backend, destination, PACE)  # real time.sleep
    barrier.wait(timeout=60)
    taken = []
    for _ in range(PER_PROCESS):
        slot = throttle.acquire().slot
        taken.append((slot, time.time(), index))
    results.put(taken)


def _run_race(spec: dict[str, str]) -> list[tuple[float, float, int]]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    destination = f"shared-{uuid.uuid4().hex[:10]}"
    children = [
        context.Process(target=_race, args=(spec, destination, barrier, results, i))
        for i in range(PROCESSES)
    ]
    for child in children:
        child.start()
    try:
        taken = [row for _ in children for row in results.get(timeout=90)]
    finally:
        for child in children:
            child.join(timeout=30)
    assert [child.exitcode for child in children] == [0] * PROCESSES
    return sorted(taken)


def _assert_paced(taken: list[tuple[float, float, int]]) -> None:
    assert len(taken) == PROCESSES * PER_PROCESS
    slots = [slot for slot, _, _ in taken]
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= PACE.interval - EPSILON, f"slots closer than 1/{RATE:g}s: {gaps}"
    # The vendor's view: any 1-second window (less rounding) holds at most RATE requests.
    most = max(sum(1 for s in slots if start <= s < start + 1.0 - 1e-3) for start in slots)
    assert most <= RATE
    # Every process slept until its slot (same host, so the backend clock is ours).
    assert all(sent >= slot - 1e-3 for slot, sent, _ in taken)
    # The processes did race: the first slots went to more than one of them.
    assert len({owner for _, _, owner in taken[: 2 * PROCESSES]}) > 1


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url


def test_processes_share_one_pace_through_redis(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    try:
        _assert_paced(_run_race({"kind": "redis", "url": redis_url, "namespace": namespace}))
    finally:
        client = redis_client(redis_url)
        keys = list(client.scan_iter(f"consent-relay:{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_processes_share_one_pace_through_postgresql(postgres_url: str) -> None:
    url = normalise_database_url(postgres_url)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    _assert_paced(_run_race({"kind": "database", "url": url}))


def test_processes_share_one_pace_through_sqlite(sqlite_file: str) -> None:
    _assert_paced(_run_race({"kind": "database", "url": sqlite_file}))
