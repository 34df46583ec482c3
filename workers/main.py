"""Entry point for the `celery` command: `celery -A workers.main worker` (and `beat`).

This is the one module that loads the settings when imported, as the Flask-Celery pattern's
`make_celery.py` does; library modules never read the environment at import time.
"""

from __future__ import annotations

from service.config import load_settings
from service.logs import configure_logging, demo_banner
from workers.celery_app import create_celery_app

settings = load_settings()
configure_logging(settings.log_level)
demo_banner(settings)
app = create_celery_app(settings)
