"""Chaos for a peer destination (issue 7): Acoustic Connect next to Engage, in the same run.

The Acoustic emulator runs in its own process at its rate limit with 10% 5xx; worker pool
processes are killed with SIGKILL mid-write, then the whole worker; decisions keep arriving.
Both destinations must converge: every contact holds its latest decision at each (or it is
dead-lettered with a reason), nothing is pending, and neither emulator counted a request
over its limit. Backlogs reach Acoustic through the sweeper's batch task.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators import acoustic
from tests.helpers.chaos_harness import (
    CHAOS_HEADROOM,
    assert_within_limit,
    kill_hard,
    person,
    send_wave,
    start_run,
    urls,
    wait_for_requests,
    worker_children,
)
from tests.helpers.peer_support import PeerProcess, state

pytestmark = pytest.mark.chaos
ACOUSTIC_LIMIT = 5  # requests/second: the relay's default for Acoustic (no published figure)


def acoustic_table(url: str) -> str:
    return "\n".join(
        [
            "[destinations.acoustic]",
            'kind = "acoustic-connect"',
            f'base_url = "{url}"',
            f'api_key = "{acoustic.API_KEY}"',
            f"rate_limit_per_second = {ACOUSTIC_LIMIT}",
            f"rate_limit_headroom = {CHAOS_HEADROOM}",  # harness.py says why
            "connect_timeout_seconds = 1",
            "read_timeout_seconds = 2",
            "batch_size = 10",
            "",
        ]
    )


def test_kill_9_with_a_faulty_rate_limited_peer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    database, broker_url = urls(request, "redis")
    flags = ("--any-contact", "--rate-limit", str(ACOUSTIC_LIMIT), "--latency-ms", "100")
    peer = PeerProcess("acoustic", tmp_path, *flags, "--error-rate", "0.1", "--seed", "5")
    run = start_run(
        tmp_path,
        database_url=database,
        broker_url=broker_url,
        emulator_flags=("--latency-ms", "150"),
        extra=acoustic_table(peer.url),
    )
    try:
        worker = run.start_worker()
        run.start_beat()
        emails = [person(i) for i in range(40)]
        send_wave(run, emails, 200, seed=21)
        wait_for_requests(run, 15)
        for pid in worker_children(worker)[:2]:
            kill_hard(pid)  # pool children in the middle of their writes
        wait_for_requests(run, 40)
        worker.stop(sig=9)
        send_wave(run, emails, 100, seed=22, start=1000)  # accepted while no worker runs
        run.start_worker()
        run.assert_converged(timeout=240)  # Engage, and nothing pending for either
        snapshot = state(peer.url)
        for email, (_occurred, _seq, consent) in run.latest.items():
            held = snapshot["contacts"].get(email.lower())
            assert held is not None and held["fields"]["tracking_consent"] == consent, email
        assert_within_limit(snapshot["faults"])
        assert snapshot["faults"]["counters"]["injected_errors"] > 0
    finally:
        run.stop()
        peer.stop()
