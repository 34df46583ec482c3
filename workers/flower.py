"""Flower, the Celery dashboard: `consent-relay flower` (the Procfile's `flower` line).

Basic auth comes from the config layers (`[flower] username` and `password`), never from the
Procfile. Flower gets it as FLOWER_BASIC_AUTH in its environment rather than as
`--basic-auth=...`, because a command line is readable by every local user (`ps`).

Without a password Flower stays off: `consent-relay run` leaves the `flower` line out of the
Procfile it runs, and a runner that starts the line anyway gets a process that says why and
idles (it does not exit, since Procfile runners stop every process when one exits). In demo
mode `run` generates a password for each run and hands it over in DEMO_PASSWORD_ENV.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn

from relay.config.flower import (
    ALL_INTERFACES,
    DEMO_PASSWORD_ENV,
    LOOPBACK,
    flower_address,
    flower_password,
    flower_url,
)
from relay.config.loader import load_settings
from relay.config.settings import Settings

IDLING = "Idling so that the other Procfile processes keep running."


def flower_argv(settings: Settings) -> list[str]:
    """`celery -A workers.main flower` with this interpreter, so any install layout works."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.main",
        "flower",
        f"--port={settings.ops.flower_port}",
        f"--address={flower_address(settings)}",
    ]


def flower_env(settings: Settings, environ: Mapping[str, str], password: str) -> dict[str, str]:
    """Flower's environment: basic auth from the config (overriding any FLOWER_BASIC_AUTH; other
    FLOWER_<OPTION> variables, such as FLOWER_URL_PREFIX, still reach Flower), the config file
    for `workers.main`, which `--config` may have named, and no PROMETHEUS_MULTIPROC_DIR."""
    env = dict(environ)
    env["FLOWER_BASIC_AUTH"] = f"{settings.ops.flower_username}:{password}"
    # Flower has Prometheus metrics of its own (on its port); they must not land among the
    # relay's in a shared multiprocess directory.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if settings.config_path is not None:
        env["CONSENT_RELAY_CONFIG"] = str(settings.config_path.resolve())
    return env


def off_reason(settings: Settings, password: str | None) -> str | None:
    """Why Flower cannot start, or None. The port is checked too: a Flower that fails to bind
    would exit, and take every other Procfile process down with it."""
    if password is None and settings.demo:
        return "in demo mode `consent-relay run` generates its password"
    if password is None:
        return "no [flower] password is configured (at least 12 characters)"
    port, address = settings.ops.flower_port, flower_address(settings)
    if not can_listen(address, port):
        return f"port {port} on {address} is in use (set [flower] port)"
    return None


def can_listen(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def run(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    idle: Callable[[], object] = signal.pause,
) -> NoReturn:
    """Replace this process with Flower, or idle (until a signal ends it) when it is off."""
    env = os.environ if environ is None else environ
    password = flower_password(settings, env)
    reason = off_reason(settings, password)
    if password is None or reason is not None:
        print(f"Flower is off: {reason}. {IDLING}", file=sys.stderr, flush=True)
        while True:
            idle()
    argv = flower_argv(settings)
    sys.stdout.flush()
    os.execve(argv[0], argv, flower_env(settings, env, password))  # noqa: S606


def main() -> NoReturn:
    """`python -m workers.flower`: what `consent-relay flower` runs (the CLI imports no worker
    code). The config file comes as CONSENT_RELAY_CONFIG, as for every Procfile process."""
    run(load_settings())


__all__ = [
    "ALL_INTERFACES",
    "DEMO_PASSWORD_ENV",
    "LOOPBACK",
    "flower_address",
    "flower_password",
    "flower_url",
    "main",
    "run",
]

if __name__ == "__main__":
    main()
