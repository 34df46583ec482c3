"""Configuration in layers: embedded defaults, the TOML file, then the environment.

Nothing here runs at import time: `load_settings()` is called by the app factory, the
Celery entry point and the CLI, each with the environment it was given. The defaults are the
schemas' (schemas/config.py, schemas/destinations.py); the result is relay/config/settings.py's
dataclasses.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from relay.config.demo import DEMO_CONFIG
from relay.config.mapping import DEFAULT_VALUES, MappingSettings, template_problems
from relay.config.notifications import build_notifications
from relay.config.settings import (
    DeliverySettings,
    DestinationSettings,
    OpsSettings,
    PrivacySettings,
    RetentionSettings,
    Settings,
    SourceSettings,
    TracingSettings,
    VerificationSettings,
)
from relay.errors import RelayError
from schemas.config import ConfigFileSchema
from schemas.destinations import COMMON_KEYS
from schemas.sources import KIND_OPTIONS

DEFAULT_CONFIG_PATH = "consent-relay.toml"
VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(RelayError):
    """The configuration cannot be used; the message names each offending key. Met at start-up
    (the CLI prints it and exits 2); a request that met it would be the server's fault."""

    http_status = 500


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the layers and validate them; raise ConfigError naming every bad key."""
    env = os.environ if environ is None else environ
    config_path, raw = _read_file(path, env)
    expanded = _expand_vars(raw, env, ())
    try:
        data = ConfigFileSchema().load(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.messages, config_path)) from exc
    return _build(data, env, config_path)


def _read_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path | None, dict[str, Any]]:
    explicit = path is not None or bool(env.get("CONSENT_RELAY_CONFIG"))
    candidate = Path(path or env.get("CONSENT_RELAY_CONFIG") or DEFAULT_CONFIG_PATH)
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist (CONSENT_RELAY_CONFIG)")
        return None, DEMO_CONFIG
    try:
        with candidate.open("rb") as handle:
            return candidate, tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{candidate}: cannot be read: {exc.strerror}") from exc


def _expand_vars(value: Any, env: Mapping[str, str], key: tuple[str, ...]) -> Any:
    """Replace `${VAR}` in every string value, naming the key when VAR is undefined."""
    if isinstance(value, dict):
        return {k: _expand_vars(v, env, (*key, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_vars(v, env, (*key, str(i))) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{'.'.join(key)}: environment variable {name} is not defined")
        return env[name]

    return VAR_PATTERN.sub(substitute, value)


def _describe(messages: Any, config_path: Path | None) -> str:
    where = str(config_path) if config_path else "embedded demo config"
    lines = [f"{key}: {message}" for key, message in _flatten(messages, ())]
    return f"invalid configuration in {where}:\n  " + "\n  ".join(lines)


def _flatten(messages: Any, prefix: tuple[str, ...]) -> list[tuple[str, str]]:
    if isinstance(messages, dict):
        out: list[tuple[str, str]] = []
        for key, inner in messages.items():
            # marshmallow nests Dict-field errors under "value" (and key errors under "key").
            part = (
                () if key in ("value", "_schema") else ("(name)",) if key == "key" else (str(key),)
            )
            out.extend(_flatten(inner, prefix + part))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(".".join(prefix) or "(file)", " ".join(messages))]
    return [(".".join(prefix), str(messages))]


def _build(data: dict[str, Any], env: Mapping[str, str], config_path: Path | None) -> Settings:
    service = data["service"]
    data_dir = Path(service["data_dir"])
    database_url = env.get("DATABASE_URL") or service["database_url"] or _default_db(data_dir)
    broker_url = env.get("CELERY_BROKER_URL") or service["broker_url"] or "filesystem://"
    port = _port(env.get("PORT"), service["port"])
    tolerance = service["timestamp_tolerance_seconds"]
    sources = {
        name: _source(name, src, tolerance, config_path) for name, src in data["sources"].items()
    }
    destinations = {name: _destination(name, dest) for name, dest in data["destinations"].items()}
    return Settings(
        port=port,
        database_url=normalise_database_url(database_url),
        broker_url=broker_url,
        data_dir=data_dir,
        max_body_bytes=service["max_body_bytes"],
        timestamp_tolerance_seconds=tolerance,
        max_future_skew_seconds=service["max_future_skew_seconds"],
        queue=service["queue"],
        log_level=service["log_level"],
        delivery=_delivery(data["delivery"]),
        sources=sources,
        destinations=destinations,
        admin_tokens=tuple(data["admin"]["tokens"]),
        ops=_ops(data),
        config_path=config_path,
        demo=config_path is None,
        trusted_proxies=service["trusted_proxies"],
        verification=VerificationSettings(**data["verification"]),
        tracing=TracingSettings(**data["tracing"]),
        privacy=PrivacySettings(**data["privacy"]),
        retention=RetentionSettings(**data["retention"]),
        notifications=build_notifications(data["notifications"]),
    )


def _source(
    name: str, src: dict[str, Any], tolerance: int, config_path: Path | None
) -> SourceSettings:
    mapping = src["mapping"]
    settings = SourceSettings(
        name=name,
        kind=src["kind"],
        secrets=tuple(src["secrets"]),
        source=src["source"],
        timestamp_tolerance_seconds=src.get("timestamp_tolerance_seconds", tolerance),
        mapping=MappingSettings(
            source=src["source"],
            source_id=src.get("source_id"),
            email=mapping["email"],
            consent=mapping["consent"],
            values=(
                {key.strip().lower(): value for key, value in mapping["values"].items()}
                if mapping["values"] is not None
                else dict(DEFAULT_VALUES)
            ),
            when_missing=mapping["when_missing"],
            evidence={
                key: tuple(value) if isinstance(value, list) else value
                for key, value in src["evidence"].items()
            },
        ),
        options={key: src[key] for key in KIND_OPTIONS if key in src},
    )
    configured = frozenset(src.get("hmac", {}).get("variables", {}))
    problems = template_problems(settings.kind, settings.effective_mapping, configured)
    if problems:
        raise ConfigError(_describe({"sources": {name: problems}}, config_path))
    return settings


def _destination(name: str, dest: dict[str, Any]) -> DestinationSettings:
    common = {key: value for key, value in dest.items() if key in COMMON_KEYS}
    options = {key: value for key, value in dest.items() if key not in COMMON_KEYS}
    return DestinationSettings(name=name, **common, options=options)


def _ops(data: dict[str, Any]) -> OpsSettings:
    admin, flower = data["admin"], data["flower"]
    return OpsSettings(
        admin_username=admin["username"],
        admin_password=admin["password"],
        metrics_token=data["metrics"]["token"],
        flower_port=flower["port"],
        flower_username=flower["username"],
        flower_password=flower["password"],
    )


def _delivery(delivery: dict[str, Any]) -> DeliverySettings:
    schedule = tuple(delivery.pop("retry_schedule_seconds"))
    return DeliverySettings(retry_schedule_seconds=schedule, **delivery)


def _default_db(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'consent-relay.db'}"


def _port(env_value: str | None, file_value: int) -> int:
    if env_value is None or env_value == "":
        return file_value
    if not (env_value.isascii() and env_value.isdigit()) or not 0 < int(env_value) < 65536:
        raise ConfigError(f"PORT: {env_value!r} is not a TCP port number")
    return int(env_value)


def web_concurrency(environ: Mapping[str, str]) -> int:
    """gunicorn's worker processes (service/http/web.py): WEB_CONCURRENCY, else two per core. Each
    webhook waits on its ledger commit; with one sync worker per core the cores idled meanwhile
    (bench: +15% requests/s with 4 workers on 2 cores, and no change for a bare endpoint)."""
    value = environ.get("WEB_CONCURRENCY", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    return 2 * (os.cpu_count() or 1)


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` and Heroku-style `postgres://` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
