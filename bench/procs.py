"""Child processes for the benchmark: started in their own session, logged to a file, stopped
(with their whole process group) however the run ends, and measured through /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

POLL_SECONDS = 0.1


class Proc:
    """A child process (and its process group) whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, logdir: Path):
        self.name = name
        self.log = logdir / f"{name}.log"
        self._handle = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_for(seen, timeout, f"{text!r} in {self.log}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`; safe to call twice."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        else:  # the leader is gone; stragglers in its group still get a SIGKILL
            _signal_group(self.proc.pid, signal.SIGKILL)
        if not self._handle.closed:
            self._handle.close()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """The predicate's first true value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    def up() -> bool:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-3000:]}")
        return answers(url)

    wait_for(up, timeout, url)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def process_tree(root: int) -> list[int]:
    """`root` and every descendant alive now."""
    parents = {
        int(p.name): _parent(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()
    }
    tree, frontier = [root], [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items() if parent == current]
        tree.extend(children)
        frontier.extend(children)
    return tree


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of one process in KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_rss(root: int) -> list[int]:
    """Peak RSS (KiB) of each process in the tree, the root first."""
    return [peak_rss_kib(pid) for pid in process_tree(root)]


SERVICE_NAMES = {"postgres": "PostgreSQL", "redis-server": "Redis"}
SERVICES = frozenset(SERVICE_NAMES)  # shared servers: neither ours nor "others"
TICKS = os.sysconf("SC_CLK_TCK")


def _times(pid: int) -> tuple[str, int]:
    """(comm, utime + stime + cutime + cstime): a reaped child's time moves to its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0
    comm, _, rest = stat.partition(" (")[2].rpartition(") ")
    fields = rest.split()
    return comm, sum(int(value) for value in fields[11:15])


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    busy: int  # every CPU, in clock ticks, from /proc/stat
    mine: int  # this process and its descendants
    services: int  # PostgreSQL and Redis, whoever they worked for
    by_part: dict[str, int] = field(default_factory=dict)  # web, PostgreSQL, Redis, load

    @classmethod
    def take(cls, web_pid: int | None = None) -> CpuSnapshot:
        """With `web_pid`: the CPU of the web tree (gunicorn), of PostgreSQL, of Redis and of
        the rest of the bench's own tree (the load processes) apart, for `per_request`."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = sum(values) - values[3] - values[4]  # less idle and iowait
        mine = sum(_times(pid)[1] for pid in process_tree(os.getpid()))
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        times = [_times(pid) for pid in pids]
        by_part = {
            name: sum(t for comm, t in times if comm == comm_name)
            for comm_name, name in SERVICE_NAMES.items()
        }
        services = sum(by_part.values())
        if web_pid is not None:
            by_part["web"] = sum(_times(pid)[1] for pid in process_tree(web_pid))
            by_part["load"] = mine - by_part["web"]
        return cls(time.monotonic(), busy, mine, services, by_part)

    def others_since(self, start: CpuSnapshot) -> float:
        """Share of the machine (all cores) used by processes the bench did not start."""
        capacity = (self.at - start.at) * TICKS * (os.cpu_count() or 1)
        others = (self.busy - start.busy) - (self.mine - start.mine)
        others -= self.services - start.services
        return max(0.0, others / capacity) if capacity > 0 else 0.0

    def per_request(self, start: CpuSnapshot, requests: float) -> dict[str, float]:
        """Microseconds of CPU per request in each part since `start`."""
        if requests <= 0:
            return {}
        return {
            name: (ticks - start.by_part.get(name, 0)) / TICKS / requests * 1e6
            for name, ticks in self.by_part.items()
        }
