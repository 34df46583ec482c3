"""Logging set-up, and the helpers that keep e-mail addresses and secrets out of logs."""

from __future__ import annotations

import hashlib
import logging
import sys

from service.config import Settings

_configured = False


def configure_logging(level: str) -> None:
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs request URLs at DEBUG; Engage URLs carry the e-mail address.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    _configured = True


def mask_email(email: str) -> str:
    """A stable, non-reversible handle for an address, for log lines: `em_<12 hex>`."""
    return "em_" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:12]


def demo_banner(settings: Settings) -> None:
    if not settings.demo:
        return
    logging.getLogger("consent_relay").warning(
        "DEMO MODE: no config file found; using the embedded demo source 'demo' with a public "
        "secret and the Engage emulator at %s. Do not expose this to a network.",
        settings.destinations["engage"].base_url,
    )
