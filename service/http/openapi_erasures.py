"""The OpenAPI paths of a failed erasure at a destination: retry and acknowledge
(service/admin/privacy.py, docs/data-protection.md#at-destinations), and the schema of an
erasure's answer (`ERASED`, relay/ledger/erasure.py `ErasureResult.as_json`). Kept apart from
service/http/openapi.py, which builds the document and calls `add_paths`."""

from __future__ import annotations

from typing import Any

from apispec import APISpec

from schemas.admin import AcknowledgeBodySchema

OBJECT = {"type": "object"}
NULLABLE_STRING = {"type": ["string", "null"]}
# relay/ledger/destination_erasures.py `as_json`: the same shape as the export's
# erasures[].destinations[] (docs/data-protection.md#export)
DESTINATION_ROW: dict[str, Any] = {
    "type": "object",
    "required": ["destination", "status", "attempts", "last_status", "detail", "finished_at"],
    "properties": {
        "destination": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["pending", "done", "failed", "acknowledged"],
            "description": "In the erasure's answer `pending`, or `failed` when the identifier "
            "could not be rendered (nothing sealed); later, as the worker and operators settle it.",
        },
        "attempts": {"type": "integer", "minimum": 0},
        "last_status": {"type": ["integer", "null"], "description": "The vendor's HTTP status."},
        "detail": {**NULLABLE_STRING, "description": "Why it failed, or how it ended."},
        "finished_at": {**NULLABLE_STRING, "description": "When it ended (ISO 8601, UTC)."},
    },
}
ERASED: dict[str, Any] = {
    "type": "object",
    "required": [
        *("erasure_id", "contact_id", "erased_at", "decisions", "pseudonymised"),
        *("settled_deliveries", "chain_seq", "chain_hash", "destinations"),
    ],
    "properties": {
        "erasure_id": {"type": "string", "format": "uuid"},
        "contact_id": {"type": "integer"},
        "erased_at": {"type": "string"},
        "decisions": {"type": "integer", "minimum": 0},
        "pseudonymised": {"type": "boolean"},
        "settled_deliveries": {"type": "integer", "minimum": 0},
        "chain_seq": {"type": "integer", "minimum": 1},
        "chain_hash": {"type": "string"},
        "destinations": {
            "type": "array",
            "items": DESTINATION_ROW,
            "description": "Every destination with `erase_at_destination`, with its status "
            "(empty when none has it on).",
        },
    },
}


def add_paths(spec: APISpec) -> None:
    from service.http import openapi as doc  # the shared helpers; imported when called

    erasure_id = doc._param(
        "path", "erasure_id", {"type": "string", "format": "uuid"}, "An erasure's id."
    )
    destination = doc._param(
        "path", "destination", {"type": "string"}, "A configured destination's name."
    )
    answers: dict[str, Any] = {
        "200": doc._json(OBJECT, "The erasure id, the destination and the row's new status."),
        "404": doc._problem("`unknown-destination-erasure`: no such row."),
        "409": doc._problem(
            "`destination-erasure-not-failed` (only a failed row can be handled), or, for a "
            "retry, `destination-erasure-unsealed` (nothing is sealed: acknowledge it)."
        ),
    }
    retry = doc._admin(
        "Retry a failed erasure at a destination (back to pending)",
        answers,
        parameters=[erasure_id, destination],
        operationId="retryDestinationErasure",
    )
    base = "/admin/erasures/{erasure_id}/destinations/{destination}"
    spec.path(path=f"{base}/retry", operations={"post": retry})
    acknowledged = doc._admin(
        "Acknowledge a failed erasure at a destination (its sealed identifier is wiped)",
        {
            **answers,
            "400": "MalformedJson",
            "415": "UnsupportedMediaType",
            "422": "ValidationFailed",
        },
        parameters=[erasure_id, destination],
        operationId="acknowledgeDestinationErasure",
        **doc._json_body(AcknowledgeBodySchema, required=True),
    )
    spec.path(path=f"{base}/acknowledge", operations={"post": acknowledged})
