"""RFC 9457 problem details (`application/problem+json`) for every error the service answers."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from relay.errors import ProblemError
from schemas.responses import PROBLEM_TYPE_PREFIX


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def problem_for(exc: ProblemError) -> Response:
    """The problem document an error class describes (relay/errors.py): status, slug and title
    from the class, detail, headers and extra members from the instance."""
    return problem(
        exc.http_status or 500, exc.slug, exc.title, exc.detail, headers=exc.headers, **exc.extra
    )


def register_error_handlers(app: Flask) -> None:
    """Our errors answer by their class (relay/errors.py); Werkzeug's own (404 route, 405,
    413 ...) also answer as problem details."""

    @app.errorhandler(ProblemError)
    def _problem_error(exc: ProblemError) -> Response:
        return problem_for(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        slug = (exc.name or "error").lower().replace(" ", "-")
        response = problem(status, slug, exc.name or "Error", exc.description)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Last resort: still a problem document, never an HTML traceback. The cause is logged.
        app.logger.exception("unhandled error")
        return problem(500, "internal-error", "Internal Server Error")
