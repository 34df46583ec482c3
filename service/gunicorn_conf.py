"""gunicorn settings for `web`, read when gunicorn starts (`--config python:service.gunicorn_conf`).

The port comes from the same layers as everything else: PORT, else `[service] port`, else 8000.
"""

from __future__ import annotations

import os

from service.config import load_settings

_settings = load_settings()
# Demo mode signs with a public secret: listen on loopback only.
bind = f"{'127.0.0.1' if _settings.demo else '0.0.0.0'}:{_settings.port}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30
graceful_timeout = 20
# Access lines carry the path (/webhooks/<source>) and status, never a body or an address.
accesslog = "-"
# No shared control socket in $HOME: several instances (tests, benchmarks) run side by side.
control_socket_disable = True
