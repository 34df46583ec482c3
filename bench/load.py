"""The load generator: separate processes (multiprocessing, spawn), each with one or more
threads, each thread on its own keep-alive HTTP/1.1 connection (re-opened when the server
closes it: gunicorn's sync workers answer `Connection: close`).

Requests are built and signed in the load processes before the clock starts. Closed loop: each
connection sends its next request as soon as the previous answer is read. Open loop: request i
is due at start + i / rate whatever happened before, and its latency counts from that due
time, so a slow server is not hidden by the client waiting for it (coordinated omission)."""

from __future__ import annotations

import base64
import datetime as dt
import math
import multiprocessing as mp
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any, Protocol

import standardwebhooks

OK_STATUSES = frozenset({200, 202})
Sample = tuple[float, float, int]  # (begin, done) seconds from the start, HTTP status (0: I/O)


class RequestBuilder(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    def build(self, body: bytes) -> bytes: ...


def _request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Webhooks:
    """Signed like tests.helpers.support.signed_headers: a unique webhook-id, a fresh timestamp."""

    host: str
    port: int
    secret: str
    path: str = "/webhooks/signup"

    def build(self, body: bytes) -> bytes:
        now = dt.datetime.now(dt.UTC)
        msg_id = f"msg_{uuid.uuid4().hex}"
        signature = standardwebhooks.Webhook(self.secret).sign(msg_id, now, body.decode())
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp()))}
        headers["webhook-signature"] = signature
        return _request(self.host, self.port, self.path, headers, body)


@dataclass(frozen=True)
class EngageCalls:
    """Calls straight to the Engage emulator (Basic auth), to measure the emulator alone."""

    host: str
    port: int
    user: str
    password: str
    path: str = "/api/rest/contact/create"

    def build(self, body: bytes) -> bytes:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return _request(self.host, self.port, self.path, {"Authorization": f"Basic {token}"}, body)


@dataclass(frozen=True)
class Plan:
    """warmup + duration seconds (duration None: send every body once); rate None: closed."""

    warmup: float = 0.0
    duration: float | None = None
    rate: float | None = None
    processes: int = 4
    threads: int = 1


class Connection:
    """A minimal HTTP/1.1 client: Content-Length answers only (all the servers here send it)."""

    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self.sock: socket.socket | None = None

    def exchange(self, request: bytes) -> int:
        reused = self.sock is not None
        try:
            return self._exchange(request)
        except OSError:
            self.close()
            if not reused:
                return 0
        try:  # a kept-alive connection the server had closed: once more on a new one
            return self._exchange(request)
        except OSError:
            self.close()
            return 0

    def _exchange(self, request: bytes) -> int:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        status, close = self._read_answer(self.sock)
        if close:
            self.close()
        return status

    @staticmethod
    def _read_answer(sock: socket.socket) -> tuple[int, bool]:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
        missing = int(headers.get(b"content-length", b"0")) - len(rest)
        while missing > 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            missing -= len(chunk)
        close = headers.get(b"connection", b"") == b"close" or lines[0].startswith(b"HTTP/1.0")
        return int(lines[0].split()[1]), close

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _thread(
    builder: RequestBuilder, requests: list[bytes], plan: Plan, slot: tuple[int, int], start: float
) -> list[Sample]:
    conn, samples = Connection(builder.host, builder.port), []
    end = math.inf if plan.duration is None else plan.warmup + plan.duration
    first, stride = slot
    for k, request in enumerate(requests):
        if plan.rate is None:
            begin = time.monotonic() - start
        else:  # open loop: due at its slot, latency counted from then
            begin = (first + k * stride) / plan.rate
            time.sleep(max(0.0, begin - (time.monotonic() - start)))
        if begin >= end:
            break
        status = conn.exchange(request)
        samples.append((begin, time.monotonic() - start, status))
    conn.close()
    return samples


def _child(
    builder: RequestBuilder,
    bodies: list[list[bytes]],
    plan: Plan,
    first_slot: int,
    queues: tuple[Queue[float], Queue[float], Queue[list[Sample]]],
) -> None:
    ready, go, out = queues
    requests = [[builder.build(body) for body in chunk] for chunk in bodies]
    ready.put(0.0)
    start = go.get()  # CLOCK_MONOTONIC is one clock for every process on Linux
    results: list[list[Sample]] = [[] for _ in requests]
    stride = plan.processes * plan.threads

    def work(i: int) -> None:
        results[i] = _thread(builder, requests[i], plan, (first_slot + i, stride), start)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put([sample for result in results for sample in result])


@dataclass
class LoadResult:
    count: int
    seconds: float
    samples: list[Sample] = field(repr=False)  # the measured window, by begin time
    statuses: Counter[int]
    exhausted: bool = False
    sent: int = 0  # every request answered, warm-up included
    watched: tuple[Any, Any] | None = None  # `watch()` when sending began and when it ended

    @property
    def latencies(self) -> list[float]:
        return [done - begin for begin, done, _ in self.samples]

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status not in OK_STATUSES)

    def percentile_ms(self, pct: float) -> float:
        """Latency percentile (pct in 0..100, steps of 0.1) in milliseconds."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else math.nan
        cuts = statistics.quantiles(self.latencies, n=1000, method="inclusive")
        return cuts[round(pct * 10) - 1] * 1000


def run(
    builder: RequestBuilder,
    bodies: list[bytes],
    plan: Plan,
    watch: Callable[[], Any] | None = None,
) -> LoadResult:
    """Send `bodies` (each at most once) under `plan`; the measured window excludes warm-up.
    `watch` is called once the load processes are ready (their requests built and signed)
    and again when every answer is in, for measurements of the sending alone."""
    lanes = plan.processes * plan.threads
    ctx = mp.get_context("spawn")
    queues: tuple[Queue[float], Queue[float], Queue[list[Sample]]] = (
        ctx.Queue(),
        ctx.Queue(),
        ctx.Queue(),
    )
    children = []
    for p in range(plan.processes):
        chunks = [bodies[g::lanes] for g in range(p * plan.threads, (p + 1) * plan.threads)]
        args = (builder, chunks, plan, p * plan.threads, queues)
        children.append(ctx.Process(target=_child, args=args, daemon=True))
    try:
        for child in children:
            child.start()
        for _ in children:
            queues[0].get(timeout=120)
        before = watch() if watch else None
        start = time.monotonic() + 0.05
        for _ in children:
            queues[1].put(start)
        budget = 900.0 if plan.duration is None else plan.warmup + plan.duration + 120
        samples: list[Sample] = []
        for _ in children:
            samples += queues[2].get(timeout=budget)
        watched = (before, watch()) if watch else None
    finally:
        for child in children:
            if child.pid is None:  # never started
                continue
            child.join(5)
            if child.is_alive():
                child.kill()
    result = _summarise(samples, plan, everything_sent=len(samples) >= len(bodies))
    result.sent, result.watched = len(samples), watched
    return result


def _summarise(samples: list[Sample], plan: Plan, everything_sent: bool) -> LoadResult:
    if plan.duration is None:
        seconds = max(s[1] for s in samples) - min(s[0] for s in samples) if samples else 0.0
        window = samples
    else:
        low, high = plan.warmup, plan.warmup + plan.duration
        index = 0 if plan.rate is not None else 1  # open loop: by due time; closed: by answer
        window = [s for s in samples if low <= s[index] <= high]
        seconds = plan.duration
    return LoadResult(
        count=len(window),
        seconds=seconds,
        samples=sorted(window),
        statuses=Counter(status for _, _, status in window),
        # a timed run that used up its bodies ended early: its rate is a lower bound
        exhausted=plan.duration is not None and everything_sent,
    )
