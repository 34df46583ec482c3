"""The OpenAPI paths of a failed erasure at a destination: retry and acknowledge
(service/admin/privacy.py, docs/data-protection.md#at-destinations). Kept apart from
service/http/openapi.py, which builds the document and calls `add_paths`."""

from __future__ import annotations

from typing import Any

from apispec import APISpec

from schemas.admin import AcknowledgeBodySchema

OBJECT = {"type": "object"}


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
