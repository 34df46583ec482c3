"""Reading a `kind = "hmac"` delivery: its body as answers, and the values its config
locates (`header:<Name>`, `body:<dotted.path>`, `body-sha256`; schemas/hmac.py).

A JSON body becomes answers keyed by dotted path (`customer.email_marketing_consent.state`,
`items.0.answer`): every scalar, and every list of scalars (a checkbox) as the list. A form
body's answers are its fields. The walk is iterative and stops at MAX_DEPTH, so a deeply
nested body is read, not a RecursionError.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from service.sources.base import InboundRequest, MediaTypeError, PayloadError, parse_time
from service.sources.payloads import read_json

MAX_DEPTH = 32
MAX_ANSWERS = 5000
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def read_body(request: InboundRequest, kind: str) -> Any:
    """The parsed body: JSON (415 unless declared JSON) or the form's fields."""
    if kind == "json":
        return read_json(request)
    if request.mimetype not in FORM_TYPES:
        raise MediaTypeError("The body must be a form (application/x-www-form-urlencoded).")
    return dict(request.form)


def answers(document: Any) -> dict[str, Any]:
    """Every scalar (and scalar list) of the document by its dotted path."""
    found: dict[str, Any] = {}
    stack: list[tuple[str, Any, int]] = [("", document, 0)]
    while stack and len(found) < MAX_ANSWERS:
        path, value, depth = stack.pop()
        children = _children(value)
        if children is None:
            if path:
                found[path] = value
        elif depth < MAX_DEPTH:
            stack.extend((f"{path}.{key}" if path else key, v, depth + 1) for key, v in children)
    return found


def _children(value: Any) -> list[tuple[str, Any]] | None:
    """A container's entries by key; None for a leaf (a scalar, or a list of scalars)."""
    if isinstance(value, dict):
        return [(str(key), child) for key, child in value.items()]
    if isinstance(value, list) and any(isinstance(child, dict | list) for child in value):
        return [(str(index), child) for index, child in enumerate(value)]
    return None


def locate(locator: str, request: InboundRequest, flat: Mapping[str, Any], what: str) -> str | None:
    """The located value as text, None when absent; PayloadError when it is not a scalar."""
    if locator == "body-sha256":
        return hashlib.sha256(request.body).hexdigest()
    place, _, name = locator.partition(":")
    if place == "header":
        return request.header(name) or None
    value = flat.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PayloadError(f"The {what} at {locator!r} must be a string or a number.")
    return value if isinstance(value, str) else str(value)


def occurred(
    locator: str | None, request: InboundRequest, flat: Mapping[str, Any]
) -> dt.datetime | None:
    """An ISO 8601 time, or a number of seconds since the epoch (Stripe's `created`)."""
    if locator is None:
        return None
    if locator.startswith("body:") and isinstance(flat.get(locator[5:]), int | float):
        value = flat[locator[5:]]
        if isinstance(value, bool):
            return None
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (ValueError, OverflowError, OSError):
            return None
    try:
        return parse_time(locate(locator, request, flat, "time"))
    except PayloadError:
        return None
