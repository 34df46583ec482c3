"""Baseline 4, the plain Celery relay: what a Python developer writes from the design card alone
(docs/architecture.md), with the field's usual libraries and nothing of ours on the request path:

- Flask receives the webhook;
- the `standardwebhooks` package verifies it (its own `Webhook.verify`, which also parses the
  JSON);
- a marshmallow schema validates the decision;
- a Celery task is queued with `.delay()` on Redis, and the answer is 202.

No ledger: the decision exists only as a message in Redis when the answer leaves, so a crash of
Redis or a lost message loses it. That is the durability the relay adds on top, and the reason
the relay must answer only after its commit. No worker consumes the queue during the run: only
the web is measured, as for every intake row. The queue carries the bench run's queue name, so
`env.drop_redis_keys` removes what piled up.
"""

from __future__ import annotations

import os
import uuid

import standardwebhooks
from celery import Celery
from flask import Flask, Response, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate

from relay.config.loader import load_settings

STATES = ("granted", "denied", "withdrawn", "unknown")
TASK_NAME = "bench_plain.write_consent"


class DecisionSchema(Schema):
    """The design card's payload: an address, a state, where it came from, when."""

    email = fields.Email(required=True)
    tracking_consent = fields.String(required=True, validate=validate.OneOf(STATES))
    source = fields.String(load_default=None)
    source_id = fields.String(load_default=None)
    occurred_at = fields.AwareDateTime(required=True)


def _celery(broker_url: str, queue: str) -> Celery:
    celery = Celery("bench_plain", broker=broker_url, set_as_current=False)
    celery.conf.task_default_queue = queue
    celery.conf.broker_connection_retry_on_startup = False

    @celery.task(name=TASK_NAME)
    def write_consent(decision: dict[str, str | None]) -> None:  # never consumed in the bench
        raise NotImplementedError

    return celery


def plain_celery_app() -> Flask:
    settings = load_settings(environ=os.environ)
    webhook = standardwebhooks.Webhook(settings.sources["signup"].secrets[0])
    celery = _celery(settings.broker_url, f"{settings.queue}.plain")
    task = celery.tasks[TASK_NAME]
    schema = DecisionSchema()
    app = Flask("bench_plain_celery")

    @app.post("/webhooks/<source_name>")
    def receive(source_name: str) -> Response | tuple[dict[str, object], int]:
        try:
            payload = webhook.verify(request.get_data(), dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            return {"title": "invalid signature"}, 401
        try:
            decision = schema.load(payload)
        except ValidationError as error:
            return {"errors": error.messages}, 422
        decision["occurred_at"] = decision["occurred_at"].isoformat()
        task.delay(decision)
        response = jsonify({"event_id": str(uuid.uuid4())})
        response.status_code = 202
        return response

    app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    return app
