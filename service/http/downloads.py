"""One person's exported record as a download: the admin API's and the operator page's."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from relay.ledger import export


def record_download(record: dict[str, Any], wanted: str, contact_id: int) -> Response:
    """The export as an attachment, never cached (it holds personal data)."""
    if wanted == "csv":
        response = Response(export.as_csv(record), mimetype="text/csv")
    else:
        response = Response(json.dumps(record, indent=2), mimetype="application/json")
    name = f"consent-record-{contact_id}.{wanted}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # personal data
    return response
