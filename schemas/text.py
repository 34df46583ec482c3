"""Field types for input that ends up in the ledger or on an operator's screen.

What the ledger cannot store must be refused at the boundary (a 4xx naming the field), not
found by the database (which today looked like "ledger unavailable"):

- a lone surrogate (`"\\ud800"` is valid JSON) cannot be encoded as UTF-8 at all;
- PostgreSQL refuses NUL in text (https://www.postgresql.org/docs/current/datatype-character.html)
  and enforces `varchar(n)` lengths, SQLite does neither;
- control characters (C0, DEL, C1; ESC starts a terminal escape sequence) in operator text
  would reach terminals (`consent-relay destinations list`) and log lines as they are;
- a BIGINT is 64 bits, and an aware datetime at the edge of the calendar overflows when
  converted to UTC (`0001-01-01T00:00:00+14:00`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from marshmallow import ValidationError, fields, validate

# Characters that never belong in stored text: the Unicode category Cc (C0, DEL and C1: NUL,
# ESC, CR, LF, TAB ...) and Cs (surrogates, which only appear alone in a Python str)
# (https://www.unicode.org/reports/tr44/#GC_Values_Table); one regex, as both are ranges.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
SURROGATE = re.compile("[\ud800-\udfff]")
REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_BIGINT = 2**63 - 1
REPLACEMENT = "\ufffd"


def unstorable(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    if SURROGATE.search(value):
        return "Must not contain lone surrogates (text must be valid Unicode)."
    if CONTROL.search(value):
        return "Must not contain control characters (NUL, ESC, line breaks ...)."
    return None


def storable(value: str, max_length: int) -> str:
    """Our own text (an ignore reason that quotes the sender) made storable: each refused
    character replaced by U+FFFD, cut to the column's length."""
    return REFUSED.sub(REPLACEMENT, value)[:max_length]


def printable(value: str) -> str:
    """Text from the ledger for a terminal: refused characters shown as escapes (rows
    written before they were refused may still hold them)."""
    return REFUSED.sub(lambda found: found.group().encode("unicode_escape").decode(), value)


def _refuse_unstorable(value: str) -> None:
    why = unstorable(value)
    if why is not None:
        raise ValidationError(why)


class PlainText(fields.String):
    """A string the ledger can store and a terminal can show: no control characters, no
    lone surrogates, at most `max_length` characters. Used for every operator-entered text
    (pause reasons, filters) and for the senders' event ids and types."""

    def __init__(
        self,
        *,
        max_length: int,
        min_length: int = 1,
        pattern: re.Pattern[str] | None = None,
        **kwargs: Any,
    ):
        rules: list[Any] = [validate.Length(min=min_length, max=max_length), _refuse_unstorable]
        if pattern is not None:
            rules.append(validate.Regexp(pattern))
        super().__init__(validate=rules, **kwargs)


class BigId(fields.Integer):
    """A ledger id: a strict integer from 1 to the largest BIGINT."""

    def __init__(self, **kwargs: Any):
        super().__init__(validate=validate.Range(min=1, max=MAX_BIGINT), **kwargs)


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 time with an offset that can be converted to UTC (returned in UTC)."""

    def __init__(self, **kwargs: Any):
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        parsed: dt.datetime = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError as exc:
            raise ValidationError("Must be a time between the years 1 and 9999 in UTC.") from exc
