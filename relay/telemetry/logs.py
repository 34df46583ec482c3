"""Structured logs: one JSON object per line on stderr, for web, worker and beat alike.

structlog renders our own events; the standard library's records (celery, gunicorn, alembic,
werkzeug ...) go through the same `ProcessorFormatter`, so every line is JSON with the same
keys. Context bound with `structlog.contextvars` (request_id, event_id, task_id, destination,
contact_id) is added to every line logged while it is bound. A last processor scrubs e-mail
addresses (replaced by `mask_email`) and secrets from every value, whatever logged them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from relay.config.settings import Settings
from schemas.consent import contact_key

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# E-mail addresses in any script, as the intake accepts them (marshmallow's Email: a dot-atom
# of any letters, digits and RFC 5322 atext, or an ASCII quoted string; a domain of any
# letters, `localhost` or an IP literal) and whatever looks like one in free text: the at sign
# also as `%40` and its fullwidth and small forms (U+FF20, U+FE6B; the intake refuses them,
# a person may still type them), the dot also as an ideographic or fullwidth full stop, and
# %-escapes anywhere. The local part is everything before the at sign up to a space or a
# delimiter, `=`, `/`, `?` and `&` included (they are atext), so that no part of an address
# stays in clear; the handle is computed from the part after the last of them (so
# `?email=a%40b.c` gets the handle of `a@b.c`). Lengths are bounded (254, the intake's limit)
# so that a long token costs linear time.
_AT = r"(?:[@\uFF20\uFE6B]|%40)"
_DOT = r"[.\u3002\uFF0E\uFF61]"
_LOCAL = r"""(?:"(?:[^"\\\r\n]|\\.){0,254}"|[^\s@\uFF20\uFE6B"(),:;<>\[\]\\]{1,254})"""
_LABEL = r"[^\s@\uFF20\uFE6B.\u3002\uFF0E\uFF61!-$&-,/:-?\[-^`{-~]{1,254}"
_DOMAIN = rf"(?:{_LABEL}(?:{_DOT}{_LABEL})+|localhost|\[[0-9A-Fa-f.:]{{1,64}}\])"
_EMAIL = re.compile(_LOCAL + _AT + _DOMAIN, re.IGNORECASE)
_HANDLE_START = re.compile(r"^.*[=?&/]|^'+", re.DOTALL)
_AT_FORMS = re.compile(r"[\uFF20\uFE6B]|%40", re.IGNORECASE)
_SECRETS = (
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (re.compile(r"(://[^/\s:@]*:)[^/\s@]+@"), r"\1***@"),  # URL credentials
)
_SECRET_KEYS = ("password", "secret", "token", "authorization")
# What every pattern above needs somewhere in the text: most values (ids, names, numbers as
# text) have none of it and skip the patterns; this runs on every value of every line.
_MAYBE_SENSITIVE = re.compile(r"[@\uFF20\uFE6B]|%40|whsec_|://|(?i:bearer|basic)")
_configured = False


def mask_email(email: str) -> str:
    """A stable, non-reversible handle for an address, for log lines: `em_<12 hex>`, the same
    for every spelling of one contact (schemas.consent.contact_key)."""
    return "em_" + hashlib.sha256(contact_key(email).encode(errors="replace")).hexdigest()[:12]


def _handle(match: re.Match[str]) -> str:
    """The handle of a matched address: %-escapes decoded, any query-string prefix dropped."""
    text = _HANDLE_START.sub("", unquote(match.group(0), errors="replace"))
    return mask_email(_AT_FORMS.sub("@", text))


def scrub(text: str) -> str:
    """Secrets masked, then e-mail addresses (also URL-encoded ones) replaced by their handle."""
    if _MAYBE_SENSITIVE.search(text) is None:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return _EMAIL.sub(_handle, text)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEYS)


def _scrub_value(key: str, value: Any) -> Any:
    if _secret_key(key) and value not in (None, ""):
        return "***"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: _scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(key, v) for v in value]
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """The last line of defence: no address or secret leaves the process in a log line."""
    return {key: _scrub_value(key, value) for key, value in event_dict.items()}


def _add_pid(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    event_dict.setdefault("pid", record.process if record is not None else os.getpid())
    return event_dict


_RECORD_KEYS = {*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime"}


def _add_extra(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """A stdlib record's `extra=` fields become keys of the line."""
    record = event_dict.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS and not key.startswith("_"):
                event_dict.setdefault(key, value)
    return event_dict


_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _add_pid,
]


def _configure_structlog() -> None:
    """structlog hands its events to the standard library (so caplog, levels and handlers
    work the same for every logger); the formatter below renders them."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


_configure_structlog()  # no I/O and no environment: only how events reach the stdlib


_LEADING = ("timestamp", "level", "logger", "event")


def _leading_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger and event first: lines read well by people too."""
    return {
        **{key: event_dict[key] for key in _LEADING if key in event_dict},
        **{key: value for key, value in event_dict.items() if key not in _LEADING},
    }


def json_formatter() -> logging.Formatter:
    """The formatter of every handler: structlog events and stdlib records alike (their
    `extra=` fields become keys)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, _add_extra],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            _leading_keys,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the root logger (every library logger propagates to it)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become JSON lines too (py.warnings)
    # Our lines carry no caller file/line or thread: skip collecting them for every record
    # (the logging HOWTO's "Optimization" section; it was a tenth of a log line's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    # urllib3 logs request URLs at DEBUG; Engage URLs carry the e-mail address.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    _configured = True


# --- request and task context ---------------------------------------------------------------


def request_id_from(value: str | None) -> str:
    """The caller's X-Request-ID when it looks like an id, else a fresh one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    value = get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


@contextmanager
def task_context(**fields: Any) -> Iterator[None]:
    """Bind `fields` (task_id, destination, contact_id, request_id) for one task run."""
    clear_contextvars()
    bind_contextvars(**{key: value for key, value in fields.items() if value is not None})
    try:
        yield
    finally:
        clear_contextvars()


def demo_banner(settings: Settings) -> None:
    if not settings.demo:
        return
    get_logger("consent_relay").warning(
        "DEMO MODE: no config file found; using the embedded demo source 'demo' with a public "
        "secret and the Engage emulator. Do not expose this to a network.",
        engage_url=settings.destinations["engage"].base_url,
    )
