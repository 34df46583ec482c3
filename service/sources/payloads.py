"""Reading bodies: JSON as the canonical kinds and most senders send it, strictly."""

from __future__ import annotations

import json
from typing import Any

from service.sources.base import InboundRequest, MalformedJsonError, MediaTypeError, PayloadError


def is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def read_json(request: InboundRequest) -> Any:
    """The body as JSON: 415 unless declared JSON, 400 unless UTF-8 JSON (no NaN/Infinity)."""
    if not is_json(request.mimetype):
        raise MediaTypeError("The body must be application/json.")
    return parse_json(request.body)


def parse_json(body: bytes | str) -> Any:
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise MalformedJsonError("The body is not UTF-8.") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # ValueError besides JSONDecodeError: an integer of more than 4300 digits (Python's
        # int-string conversion limit, https://docs.python.org/3/library/stdtypes.html#int-max-str-digits).
        raise MalformedJsonError(f"The body is not valid JSON: {exc}") from exc


def json_object(value: Any, what: str = "The body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object.")
    return value


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)
