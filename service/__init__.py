"""Consent Relay web service: the Flask app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from service import admin, health, intake, logs, metrics_http, openapi, ops
from service.config import Settings, load_settings
from service.db import LedgerIdConverter
from service.logs import configure_logging, demo_banner
from service.problems import register_error_handlers
from service.publisher import BackgroundPublisher, Publisher
from service.runtime import Runtime
from workers.celery_app import broker_kind, create_celery_app


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `test_config` may carry `SETTINGS` (a Settings) and Flask config keys."""
    overrides = dict(test_config or {})
    settings: Settings = overrides.pop("SETTINGS", None) or load_settings()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.config.update(overrides)
    app.url_map.converters["ledger_id"] = LedgerIdConverter
    # No pre-ping: the intake retries once on a dropped connection instead (service/intake.py).
    app.extensions["consent_relay"] = Runtime.build(settings, pre_ping=False)
    app.extensions["celery"] = create_celery_app(settings)
    app.extensions["publisher"] = Publisher(app.extensions["celery"])
    # kombu's filesystem transport can hand a consumer a message file before its writer has
    # written it (the file is created, then written; the worker then dies on the empty JSON).
    # A second thread in the writer widens that window, so the embedded broker publishes in
    # the request, as it always did; Redis and RabbitMQ publish in the background.
    inline = broker_kind(settings.broker_url) == "filesystem"
    app.extensions["background_publisher"] = BackgroundPublisher(
        app.extensions["publisher"], inline=inline
    )
    register_error_handlers(app)
    logs.init_app(app)  # request ids
    metrics_http.init_app(app)  # GET /metrics, multiprocess dir
    app.register_blueprint(intake.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(openapi.bp)  # GET /openapi.json
    ops.register(app)
    demo_banner(settings)
    return app
