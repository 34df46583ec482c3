"""Profile of the intake path: the real app in process (Flask test client, no gunicorn), N
signed requests, under pyinstrument, on each backend. Run as a child process so that the app's
log lines go to a file: `python -m bench.profile_intake --requests N --out FILE --workdir DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import standardwebhooks
from pyinstrument import Profiler
from pyinstrument.frame import Frame

from bench import env
from bench.sizes import intake_bodies
from relay.config.loader import load_settings
from service import create_app

WARMUP_REQUESTS = 50
TREE_LINES = 70
FLAT_LINES = 30
# Self time is charged to the first matching package (C calls count in their Python caller:
# SQLite's fsync shows up in SQLAlchemy's do_commit, for example).
PACKAGES = (
    ("sqlalchemy", "SQLAlchemy (ORM, core, and the driver calls it makes)"),
    ("psycopg", "psycopg (PostgreSQL driver)"),
    ("marshmallow", "marshmallow (payload validation)"),
    ("kombu", "Celery publish (celery, kombu, redis client)"),
    ("celery", "Celery publish (celery, kombu, redis client)"),
    ("redis", "Celery publish (celery, kombu, redis client)"),
    ("standardwebhooks", "signature check (standardwebhooks, hmac)"),
    ("hmac", "signature check (standardwebhooks, hmac)"),
    ("structlog", "logging (structlog, logging)"),
    ("logging", "logging (structlog, logging)"),
    ("prometheus_client", "metrics (prometheus_client)"),
    ("werkzeug", "Flask and Werkzeug"),
    ("flask", "Flask and Werkzeug"),
    ("json", "json"),
    ("/service/", "relay code (service/, schemas/)"),
    ("/schemas/", "relay code (service/, schemas/)"),
)


SQLALCHEMY = PACKAGES[0][1]
SQLITE_C = "C functions SQLAlchemy calls (sqlite3: execute, commit with fsync)"
OTHER = "other (stdlib, uuid, datetime, ...)"


def _package(frame: Frame, inherited: str) -> str:
    path = frame.file_path or ""
    if not path or path.startswith("<"):  # [self] or a C function: its caller's package
        return SQLITE_C if inherited == SQLALCHEMY and path == "<built-in>" else inherited
    for needle, label in PACKAGES:
        if needle in path:
            return label
    return OTHER


def by_package(root: Frame) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    stack = [(root, OTHER)]
    while stack:
        frame, inherited = stack.pop()
        label = _package(frame, inherited)
        totals[label] += frame.time - sum(child.time for child in frame.children)
        stack.extend((child, label) for child in frame.children)
    return totals


def _signed(body: bytes) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    msg_id = f"msg_{uuid.uuid4().hex}"
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(env.SECRET).sign(msg_id, now, body.decode()),
    }


def profile(backend: env.Backend, workdir: Path, count: int) -> str:
    with contextlib.ExitStack() as stack:
        relay = env.relay(stack, workdir, backend, "http://127.0.0.1:9")
        app = create_app({"SETTINGS": load_settings(relay.config, environ={}), "TESTING": True})
        client = app.test_client()
        requests = [(body, _signed(body)) for body in intake_bodies(count + WARMUP_REQUESTS)]
        for body, headers in requests[:WARMUP_REQUESTS]:
            client.post("/webhooks/signup", data=body, headers=headers)
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        with profiler:
            statuses = Counter(
                client.post("/webhooks/signup", data=body, headers=headers).status_code
                for body, headers in requests[WARMUP_REQUESTS:]
            )
        elapsed = time.perf_counter() - started
    return _render(backend, profiler, count, elapsed, statuses)


def _render(
    backend: env.Backend, profiler: Profiler, count: int, elapsed: float, statuses: Counter[int]
) -> str:
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    assert root is not None
    packages = by_package(root)
    total = sum(packages.values()) or 1.0
    ranked = sorted(packages.items(), key=lambda item: -item[1])
    lines = [
        f"## {backend.label}: {count} requests in {elapsed:.2f} s "
        f"({elapsed / count * 1000:.2f} ms each, profiler on), answers {dict(statuses)}",
        "",
        "Self time by package:",
        *(f"  {share / total:6.1%}  {label}" for label, share in ranked),
        "",
        "Top functions by self time:",
        *profiler.output_text(flat=True).splitlines()[:FLAT_LINES],
        "",
        "Call tree (top):",
        *profiler.output_text().splitlines()[:TREE_LINES],
        "",
    ]
    # pyinstrument names the profiled file by its absolute path: keep the report repo-relative.
    return "\n".join(lines).replace(f"{env.REPO}/", "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_intake")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    header = [
        "# Intake profile (pyinstrument)",
        "",
        "The real app in process: Flask test client, signed requests, no gunicorn and no",
        "network. This is the request's own thread: the enqueue runs in the background",
        "publisher's thread (service/intake/publisher.py) and is not in it; `latest.md`'s CPU",
        "table counts every thread. `make bench` writes this file.",
        "",
    ]
    sections = [
        profile(backend, args.workdir / f"profile-{i}", args.requests)
        for i, backend in enumerate((env.EMBEDDED, env.PG_REDIS))
    ]
    args.out.write_text("\n".join(header + sections))
    print(f"profile written to {args.out}", file=sys.__stdout__)


if __name__ == "__main__":
    main()
