"""Helpers shared by the integration and end-to-end tests (imported as `support`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import standardwebhooks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks docs test secret
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LWZvci1yb3RhdGlvbi10ZXN0cw=="


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a visible reason locally; fail when CI=true (a missing service is a CI fault)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " and CI=true: the test environment is broken")
        pytest.skip(message)


def is_up(url: str) -> bool:
    """Whether a GET of url answers 2xx within a second (a process that is up and ready)."""
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Delivery settings for tests through a real worker: sweeps and retries within seconds.
FAST_DELIVERY = {
    "sweep_interval_seconds": 0.5,
    "redispatch_after_seconds": 2,
    "retry_schedule_seconds": [1, 2],
    "probe_interval_seconds": 1,
}


def write_config(
    path: Path,
    *,
    data_dir: Path,
    engage_url: str,
    database_url: str | None = None,
    broker_url: str | None = None,
    queue: str = "consent-relay",
    delivery: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """The relay's config: the Engage destination and the `signup` source, plus `extra` (raw
    TOML, e.g. more `[destinations.<name>]` tables)."""
    service = [f'data_dir = "{data_dir}"', f'queue = "{queue}"']
    if database_url:
        service.append(f'database_url = "{database_url}"')
    if broker_url:
        service.append(f'broker_url = "{broker_url}"')
    delivery_lines = [f"{k} = {v}" for k, v in (delivery or {}).items()]
    destination_lines = [f"{k} = {v}" for k, v in (destination or {}).items()]
    path.write_text(
        "\n".join(
            [
                "[service]",
                *service,
                "",
                "[delivery]",
                *delivery_lines,
                "",
                "[destinations.engage]",
                'kind = "mapp-engage"',
                f'base_url = "{engage_url}"',
                'username = "api-user@example.com"',
                'password = "engage-demo-password"',
                *destination_lines,
                "",
                "[sources.signup]",
                'kind = "standard-webhooks"',
                f'secrets = ["{SECRET}", "{OTHER_SECRET}"]',
                'source = "registration_form"',
                "",
                extra,
            ]
        )
    )
    return path


def minimal_celery(tmp_path: Path, broker_url: str | None = None, queue: str | None = None) -> Any:
    """The Celery app of a minimal config (one Engage destination, one source): the embedded
    broker in `tmp_path/var/broker` unless `broker_url` is given."""
    from relay.config.loader import load_settings
    from workers.celery_app import create_celery_app

    service = [f'data_dir = "{tmp_path / "var"}"']
    service += [f'broker_url = "{broker_url}"'] if broker_url else []
    service += [f'queue = "{queue}"'] if queue else []
    config = tmp_path / "minimal.toml"
    config.write_text(
        "[service]\n" + "\n".join(service) + "\n"
        '[destinations.engage]\nkind = "mapp-engage"\nbase_url = "http://127.0.0.1:9"\n'
        'username = "u"\npassword = "p"\n'
        '[sources.s]\nkind = "standard-webhooks"\n'
        f'secrets = ["{SECRET}"]\nsource = "x"\n'
    )
    return create_celery_app(load_settings(config, environ={}))


def signed_headers(
    body: bytes, *, secret: str = SECRET, msg_id: str, when: dt.datetime | None = None
) -> dict[str, str]:
    now = when or dt.datetime.now(dt.UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(msg_id, now, body.decode()),
    }


def decision(
    email: str, consent: str, occurred_at: dt.datetime | None = None, **extra: str
) -> bytes:
    payload: dict[str, Any] = {"email": email, "tracking_consent": consent, **extra}
    if occurred_at is not None:
        payload["occurred_at"] = occurred_at.isoformat()
    return json.dumps(payload).encode()


def emulator_contact(engage_url: str, email: str) -> dict[str, Any] | None:
    response = requests.get(f"{engage_url}/_emulator/state", timeout=5)
    return response.json()["contacts"].get(email.lower())


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A child process with its output in a log file, stopped at teardown."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.log = log
        self._handle = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.output()[-4000:]}")
            return text in self.output()

        wait_for(seen, timeout, f"{text!r} in {self.log.name}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._handle.close()


def celery_worker(
    config: Path, cwd: Path, concurrency: int = 2, extra_env: dict[str, str] | None = None
) -> Process:
    env = {**os.environ, **(extra_env or {}), "CONSENT_RELAY_CONFIG": str(config)}
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.main",
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "-E",  # task events on, as the Procfile runs it (Flower)
        # A node name of its own: a killed worker's exclusive RabbitMQ queues (remote control)
        # may outlive it for a moment, and its successor must not collide with them.
        f"--hostname=cr-{uuid.uuid4().hex[:8]}@%h",
    ]
    worker = Process(argv, env, cwd, cwd / f"worker-{time.monotonic_ns()}.log")
    worker.wait_output("ready.")
    return worker


def celery_beat(config: Path, cwd: Path) -> Process:
    env = {**os.environ, "CONSENT_RELAY_CONFIG": str(config)}
    argv = [sys.executable, "-m", "celery", "-A", "workers.main", "beat", "--loglevel=INFO"]
    beat = Process(argv, env, cwd, cwd / f"beat-{time.monotonic_ns()}.log")
    beat.wait_output("beat: Starting")
    return beat


class Emulator:
    """`engage-emulator` in its own process: real HTTP, faults set over its control API."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "emulators.engage", "--port", str(self.port), *flags]
        self.process = Process(argv, dict(os.environ), workdir, workdir / "emulator.log")
        wait_for(self._up, 30, "the Engage emulator")

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}/_emulator/faults", timeout=1).ok
        except requests.ConnectionError:
            return False

    def faults(self, **values: Any) -> dict[str, Any]:
        response = requests.put(f"{self.url}/_emulator/faults", json=values, timeout=5)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = requests.get(f"{self.url}/_emulator/state", timeout=10).json()
        return state

    def consent(self, state: dict[str, Any], email: str) -> str | None:
        contact = state["contacts"].get(email.lower())
        return None if contact is None else contact["attributes"].get("tracking_consent")
