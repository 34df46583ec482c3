"""gunicorn settings for `web`, read when gunicorn starts
(`--config python:service.http.gunicorn_conf`).

The port comes from the same layers as everything else: PORT, else `[service] port`, else 8000.
This module runs in the master before any worker is forked, so it also sets up what the
workers inherit: JSON logs (gunicorn's own error and access logs included) and
PROMETHEUS_MULTIPROC_DIR, set before anything imports prometheus_client.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
from typing import Any

from gunicorn.glogging import Logger

from relay.config.loader import load_settings, web_concurrency
from relay.telemetry import metrics
from relay.telemetry.logs import REQUEST_ID_HEADER, configure_logging, get_logger, json_formatter

_settings = load_settings()
configure_logging(_settings.log_level)
_metrics_dir = metrics.prepare_multiprocess_dir(_settings.data_dir)
# Demo mode signs with a public secret: listen on loopback only.
bind = f"{'127.0.0.1' if _settings.demo else '0.0.0.0'}:{_settings.port}"  # noqa: S104
workers = web_concurrency(os.environ)
worker_class = "service.http.web.RelayWorker"  # slow clients hold a socket, never a worker
timeout = 30
graceful_timeout = 20
accesslog = "-"
# No shared control socket in $HOME: several instances (tests, benchmarks) run side by side.
control_socket_disable = True


class JsonLogger(Logger):
    """gunicorn's error log as JSON lines, and one structured access line per request: the
    path without its query string (`/admin/dead-letters?email=...` must not log an address)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(json_formatter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: dt.timedelta) -> None:
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.syslog):
            return
        try:
            self.access_log.info("request", extra=_access_fields(resp, environ, request_time))
        except Exception:  # a log line is never worth a worker (gunicorn's own access() too)
            self.error_log.exception("access log line failed")


def _access_fields(resp: Any, environ: Any, request_time: dt.timedelta) -> dict[str, Any]:
    headers = {str(name).lower(): value for name, value in (getattr(resp, "headers", None) or [])}
    return {
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO"),
        "status": status_code(resp),
        "bytes": getattr(resp, "sent", None),
        "duration_ms": round(request_time.total_seconds() * 1000, 1),
        "request_id": headers.get(REQUEST_ID_HEADER.lower()),
        "remote_addr": environ.get("REMOTE_ADDR"),
    }


def status_code(resp: Any) -> int | None:
    """The status of whatever gunicorn hands `access`: after the app answered, a wsgi Response
    with `status_code`; on its error paths (`Worker.handle_error`: a malformed request, a
    timeout) a Response that only has the string `status` ("400 Bad Request"), and under gevent
    a handler. Read `status` as gunicorn's own `Logger.atoms` does
    (https://github.com/benoitc/gunicorn/blob/master/gunicorn/glogging.py)."""
    code = getattr(resp, "status_code", None)
    if isinstance(code, int):
        return code
    status = getattr(resp, "status", None)
    if isinstance(status, int):
        return status
    first = str(status or "").split(None, 1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None


logger_class = JsonLogger


def on_starting(_server: Any) -> None:
    if _metrics_dir is not None:
        metrics.clean_stale_files(_metrics_dir)
        get_logger(__name__).info(
            "metrics shared in the multiprocess directory", path=str(_metrics_dir)
        )


def child_exit(_server: Any, worker: Any) -> None:
    """A worker ended (restart, timeout, kill): its live gauges go; its counters stay."""
    metrics.mark_process_dead(worker.pid)


def post_worker_init(_worker: Any) -> None:
    """The app is loaded: move everything it allocated at start-up out of the collector's
    sight, so that a full collection scans what requests allocate, not every module of
    Celery, SQLAlchemy and Flask (the `gc.freeze` advice for pre-fork servers, Python's gc
    docs). Measured: full collections had stalled every worker for 40-60 ms every 2 s."""
    gc.freeze()
