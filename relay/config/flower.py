"""Flower's settings as the CLI and the launcher (workers/flower.py) both read them."""

from __future__ import annotations

from collections.abc import Mapping

from relay.config.settings import Settings

# Set by `consent-relay run` in demo mode only; read only when no config file is in use.
DEMO_PASSWORD_ENV = "CONSENT_RELAY_DEMO_FLOWER_PASSWORD"  # noqa: S105 - a variable name
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - Flower is behind basic auth outside demo mode


def flower_password(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The configured password; in demo mode the one `run` generated; else None (off)."""
    if settings.ops.flower_password:
        return settings.ops.flower_password
    if settings.demo:
        return environ.get(DEMO_PASSWORD_ENV) or None
    return None


def flower_address(settings: Settings) -> str:
    # The demo's web and webhook secret are public on this machine; so is its Flower's port.
    return LOOPBACK if settings.demo else ALL_INTERFACES


def flower_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.ops.flower_port}"
