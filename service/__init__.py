"""Consent Relay web service: the Flask app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.messaging.client import create_celery_client
from relay.telemetry.logs import configure_logging, demo_banner
from relay.telemetry.tracing import configure_tracing
from service.admin import api as admin
from service.admin import privacy as admin_privacy
from service.health import metrics_http
from service.health import probes as health
from service.http import openapi, request_ids
from service.http.converters import LedgerIdConverter
from service.http.problems import register_error_handlers
from service.intake import routes as intake
from service.intake.publisher import BackgroundPublisher, Publisher
from service.ops import page as ops
from service.runtime import Runtime


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `test_config` may carry `SETTINGS` (a Settings) and Flask config keys."""
    overrides = dict(test_config or {})
    settings: Settings = overrides.pop("SETTINGS", None) or load_settings()
    configure_logging(settings.log_level)
    configure_tracing(settings.tracing, role="web")  # off unless [tracing] enabled
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.config.update(overrides)
    app.url_map.converters["ledger_id"] = LedgerIdConverter
    if settings.trusted_proxies:  # only when configured: the headers are trivially forged
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    # No pre-ping: the intake retries once on a dropped connection instead (service/intake.py).
    app.extensions["consent_relay"] = Runtime.build(settings, pre_ping=False)
    app.extensions["celery"] = create_celery_client(settings)
    app.extensions["publisher"] = Publisher(app.extensions["celery"])
    # Every broker, the embedded one included (its files are written atomically:
    # relay/messaging/embedded_broker.py), publishes off the request path.
    app.extensions["background_publisher"] = BackgroundPublisher(app.extensions["publisher"])
    register_error_handlers(app)
    request_ids.init_app(app)
    metrics_http.init_app(app)  # GET /metrics, multiprocess dir
    app.register_blueprint(intake.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(admin_privacy.bp)
    app.register_blueprint(openapi.bp)  # GET /openapi.json
    ops.register(app)
    demo_banner(settings)
    return app
