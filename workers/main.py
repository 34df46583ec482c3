"""Entry point for the `celery` command: `celery -A workers.main worker` (and `beat`).

This is the one module that loads the settings when imported, as the Flask-Celery pattern's
`make_celery.py` does; library modules never read the environment at import time.

Logs: Celery leaves logging alone once a `setup_logging` receiver exists, so worker and beat
(and the pool children, which inherit it) log JSON lines through `configure_logging`.
Metrics: the worker's main process sets up PROMETHEUS_MULTIPROC_DIR before its pool forks
(nothing imports prometheus_client earlier); each child writes its own files there, and
marks itself dead when it shuts down. Beat, Flower and `celery inspect` write no metrics.
Traces: each pool child sets up its exporter after the fork (its batching thread is its own)
and flushes it when it shuts down (relay/telemetry/tracing.py; off unless configured).
"""

from __future__ import annotations

import os
from typing import Any

from celery import signals

from relay.config.loader import load_settings
from relay.telemetry import metrics, tracing
from relay.telemetry.logs import configure_logging, demo_banner, get_logger
from workers.celery_app import create_celery_app

log = get_logger(__name__)
settings = load_settings()
configure_logging(settings.log_level)
demo_banner(settings)
app = create_celery_app(settings)


@signals.setup_logging.connect
def _setup_logging(**_kwargs: Any) -> None:
    configure_logging(settings.log_level)


@signals.worker_init.connect
def _worker_init(**_kwargs: Any) -> None:
    path = metrics.prepare_multiprocess_dir(settings.data_dir)
    if path is not None:
        metrics.clean_stale_files(path)
        log.info("metrics shared in the multiprocess directory", path=str(path))


@signals.worker_process_init.connect
def _worker_process_init(**_kwargs: Any) -> None:
    tracing.configure_tracing(settings.tracing, role="worker")


@signals.worker_process_shutdown.connect
def _worker_process_shutdown(pid: int | None = None, **_kwargs: Any) -> None:
    metrics.mark_process_dead(pid or os.getpid())
    tracing.shutdown_tracing()


@signals.worker_shutdown.connect
def _worker_shutdown(**_kwargs: Any) -> None:
    metrics.mark_process_dead(os.getpid())
