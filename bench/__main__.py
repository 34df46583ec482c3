"""`python -m bench [--full]`: intake and delivery against their baselines, then (full run
only) the intake profile; writes bench/results/latest.md and latest.png plus timestamped
copies."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench import chart, delivery, intake, lanes, memory, recovery
from bench.env import EMBEDDED, PG_REDIS, REPO
from bench.report import Meta, Results, markdown
from bench.sizes import FULL, QUICK, Sizes

RESULTS = REPO / "bench" / "results"


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack: processes stop, databases drop


def _replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)  # *.tmp is git-ignored: a half-written result never shows


def measure(workdir: Path, sizes: Sizes, meta: Meta) -> Results:
    intake_rows = intake.run(workdir / "intake", sizes)
    specs = delivery.specs(sizes)
    delivered = [delivery.run(workdir / f"delivery-{i}", s) for i, s in enumerate(specs)]
    clients = sorted({s.concurrency for s in specs if "no rate limit" in s.name})
    capacity = [
        delivery.emulator_capacity(workdir / "alone", n, sizes.capacity_seconds) for n in clients
    ]
    recovered = [
        recovery.run(workdir / f"recovery-{i}", backend, sizes.recovery_kills)
        for i, backend in enumerate((EMBEDDED, PG_REDIS))
    ]
    isolation = lanes.isolation(workdir / "isolation", sizes)
    withdrawals = lanes.withdrawals(workdir / "withdrawals", sizes)
    workers = memory.run(workdir / "memory")
    return Results(
        meta, intake_rows, delivered, capacity, recovered, isolation, withdrawals, workers
    )


def profile(workdir: Path, sizes: Sizes) -> None:
    print(f"profile: {sizes.profile_requests} requests per backend, in process")
    workdir.mkdir(parents=True, exist_ok=True)
    tmp, log = RESULTS / "intake-profile.txt.tmp", workdir / "profile.log"
    argv = [sys.executable, "-m", "bench.profile_intake", "--requests"]
    argv += [str(sizes.profile_requests), "--out", str(tmp), "--workdir", str(workdir)]
    with log.open("wb") as handle:
        subprocess.run(argv, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=True)
    _replace(tmp, RESULTS / "intake-profile.txt")


def write(results: Results) -> Path:
    stamped = f"{results.meta.stamp}-{results.meta.mode}"
    for name, png in ((stamped, f"{stamped}.png"), ("latest", "latest.png")):
        chart.write(results, RESULTS / f"{png}.tmp")
        _replace(RESULTS / f"{png}.tmp", RESULTS / png)
        (RESULTS / f"{name}.md.tmp").write_text(markdown(results, png) + "\n")
        _replace(RESULTS / f"{name}.md.tmp", RESULTS / f"{name}.md")
    return RESULTS / "latest.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full sizes (10,000 decisions)")
    parser.add_argument("--no-profile", action="store_true", help="skip the intake profile")
    args = parser.parse_args(argv)
    sizes = FULL if args.full else QUICK
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show under make, too
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="consent-relay-bench-"))
    started, done = time.monotonic(), False
    try:
        results = measure(workdir, sizes, Meta.collect(sizes.name))
        if sizes is FULL and not args.no_profile:  # the quick run stays under 5 minutes
            profile(workdir / "profile", sizes)
        results.minutes = (time.monotonic() - started) / 60
        results.load_end = os.getloadavg()
        latest = write(results)
        print(latest.read_text())
        print(f"written: {latest}, latest.png and {results.meta.stamp}-{sizes.name}.md/.png")
        done = True
    finally:
        if done:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench failed; logs kept in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
