"""URL converters of the web routes."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter

from schemas.text import MAX_BIGINT


class LedgerIdConverter(IntegerConverter):
    """`<ledger_id:...>` in a route: a row id from 1 to the largest BIGINT. Anything else is
    no such row (404) instead of a query the database refuses."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_BIGINT)
