"""Reading a vendor's JSON by shape: one small accessor per JSON type.

Each returns the value when it has the expected type and an empty default when it is absent
(null or missing), and raises `PayloadError` naming the JSON path otherwise (400
`malformed-body`). A kind's walker then never meets a type it did not expect: a list where
an id belongs (`fields[0].id = []`) would otherwise fail deep inside as an unhashable key, a
string where an object belongs (`hidden = "x"`) as a missing `.items()`.
"""

from __future__ import annotations

from typing import Any

from service.sources.base import PayloadError

Scalar = str | int | float | bool | None


def optional_object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise PayloadError(f"{path} must be a JSON object.")


def optional_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise PayloadError(f"{path} must be a JSON array.")


def optional_text(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise PayloadError(f"{path} must be a string.")


def optional_scalar(value: Any, path: str) -> Scalar:
    """A string, number, boolean or null (usable as a lookup key), never an array or object."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise PayloadError(f"{path} must be a string, number or boolean.")
