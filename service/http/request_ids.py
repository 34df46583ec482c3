"""Request ids on the web: bound to every request's log lines, echoed in the response."""

from __future__ import annotations

from flask import Flask, Response, request
from structlog.contextvars import bind_contextvars, clear_contextvars

from relay.telemetry.logs import REQUEST_ID_HEADER, current_request_id, request_id_from


def init_app(app: Flask) -> None:
    """Bind a request id to every request's log lines and echo it in the response."""

    @app.before_request
    def _bind_request_id() -> None:
        clear_contextvars()
        bind_contextvars(request_id=request_id_from(request.headers.get(REQUEST_ID_HEADER)))

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        request_id = current_request_id()
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        clear_contextvars()
