"""One trace from the webhook to Engage, across a real worker process.

The web app (in this process) and a real Celery worker (a subprocess, the embedded broker and
SQLite) both export over OTLP/HTTP to a receiver run here, which decodes the protobuf
requests (tests/helpers/otlp_receiver.py): the intake request's span, the worker's delivery
task span and its Engage calls must share one trace and parent chain, through the background
publisher's message and through the dispatch task's fan-out, and no attribute may hold the
address. Nothing of ours is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import Event
from relay.messaging.names import DELIVER_TASK
from relay.telemetry import tracing
from service import create_app
from tests.helpers.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.helpers.support import (
    FAST_DELIVERY,
    celery_worker,
    decision,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
INTAKE = "POST /webhooks/<source_name>"
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP's SpanKind numbers


@dataclass
class Traced:
    app: Any
    receiver: OtlpReceiver

    def send(self, email: str, consent: str) -> None:
        body = decision(email, consent)
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        response = self.app.test_client().post("/webhooks/signup", data=body, headers=headers)
        assert response.status_code == 202

    def trace_of(self, contact_id: int) -> str:
        """The trace of the intake request that recorded `contact_id`, once exported."""

        def find() -> str | None:
            for span in self.receiver.received():
                if span.name == INTAKE and contact_id in span.attributes.get(
                    "consent_relay.contact_ids", []
                ):
                    return span.trace_id
            return None

        return str(wait_for(find, 30, f"the intake span of contact {contact_id}"))

    def spans(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.receiver.received() if span.trace_id == trace_id]


@pytest.fixture(scope="module")
def traced(engage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    workdir = tmp_path_factory.mktemp("tracing")
    with OtlpReceiver() as receiver:
        tracing_table = (
            f'[tracing]\nenabled = true\nendpoint = "{receiver.endpoint}"\n'
            'service_name = "consent-relay-test"\nexport_delay_seconds = 0.1\n'
        )
        # A second Engage destination: one decision, two deliveries, so the web's background
        # publisher can send them as one dispatch message (the fan-out hop).
        second = f'[destinations.engage_eu]\nkind = "mapp-engage"\nbase_url = "{engage}"\n'
        second += 'username = "api-user@example.com"\npassword = "engage-demo-password"\n'
        config = write_config(
            workdir / "consent-relay.toml",
            data_dir=workdir / "var",
            engage_url=engage,
            queue=f"cr-tracing-{uuid.uuid4().hex[:8]}",
            delivery=FAST_DELIVERY,
            extra=tracing_table + "\n" + second,
        )
        settings = load_settings(config, environ={})
        upgrade(make_engine(settings.database_url))
        app = create_app({"SETTINGS": settings, "TESTING": True})
        worker = celery_worker(config, workdir, concurrency=1)
        try:
            yield Traced(app, receiver)
        finally:
            worker.stop()
            tracing.shutdown_tracing()


def _contact_id(traced: Traced, email: str) -> int:
    with traced.app.extensions["consent_relay"].sessions() as session:
        return int(session.scalars(select(Event.contact_id).where(Event.email == email)).one())


def _chain(spans: list[ReceivedSpan], destination: str) -> tuple[list[ReceivedSpan], bool]:
    """intake <- [dispatch <-] delivery task <- Engage calls, checked link by link; and
    whether the delivery went through the dispatch task."""
    by_id = {span.span_id: span for span in spans}
    [intake] = [span for span in spans if span.name == INTAKE]
    tasks = [
        span
        for span in spans
        if span.name == DELIVER_TASK
        and span.attributes.get("consent_relay.destination") == destination
        and span.attributes.get("consent_relay.outcome") == "delivered"
    ]
    assert len(tasks) == 1, [s.name for s in spans]
    [task] = tasks
    assert task.kind == CONSUMER and task.resource["process.role"] == "worker"
    parent = by_id[task.parent_span_id]
    via_dispatch = parent.name == "consent_relay.dispatch"
    if parent.name == "consent_relay.dispatch":  # the fan-out hop, in the worker
        assert parent.kind == PRODUCER and parent.resource["process.role"] == "worker"
        assert parent.attributes["consent_relay.destination"] == destination
        parent = by_id[parent.parent_span_id]
    assert parent is intake
    assert intake.kind == SERVER and intake.resource["process.role"] == "web"
    assert intake.attributes["http.response.status_code"] == 202
    calls = [span for span in spans if span.parent_span_id == task.span_id]
    assert calls and all(call.kind == CLIENT for call in calls)
    for call in calls:
        assert call.attributes["consent_relay.destination"] == destination
        assert call.attributes["url.template"] in (
            "/api/rest/contact/update",
            "/api/rest/contact/create",
        )
        assert call.attributes["http.response.status_code"] in (200, 201, 204, 400)
    return [intake, task, *calls], via_dispatch


def _assert_no_address(traced: Traced, email: str) -> None:
    for span in traced.receiver.received():
        for value in [*span.attributes.values(), *span.resource.values(), span.name]:
            assert "@" not in str(value), (span.name, value)
    for body in traced.receiver.raw:  # the encoded requests, whatever field it could hide in
        assert email.encode() not in body and email.lower().encode() not in body


def test_one_trace_joins_the_webhook_the_worker_and_engage(traced: Traced) -> None:
    email = f"Trace.{uuid.uuid4().hex[:8]}+Web@Example.com"
    traced.send(email, "withdrawn")  # urgent: one message per delivery, in the urgent lane
    trace_id = traced.trace_of(_contact_id(traced, email))

    def complete() -> list[ReceivedSpan] | None:
        spans = traced.spans(trace_id)
        delivered = [s for s in spans if s.attributes.get("consent_relay.outcome") == "delivered"]
        calls = [s for s in spans if s.kind == CLIENT]
        return spans if len(delivered) == 2 and len(calls) >= 2 else None

    spans = wait_for(complete, 45, "both deliveries' spans in the webhook's trace")
    for destination in ("engage", "engage_eu"):
        chain, via_dispatch = _chain(spans, destination)
        assert {span.trace_id for span in chain} == {trace_id}
        assert not via_dispatch  # urgent: published straight from the web
    services = {span.resource["service.name"] for span in spans}
    assert services == {"consent-relay-test"}
    _assert_no_address(traced, email)


def test_the_dispatch_fan_out_keeps_the_trace(traced: Traced) -> None:
    """Two deliveries queued by one request (not urgent: a grant) usually leave as one
    dispatch message; a few webhooks make sure one did, and its trace must still run from the
    webhook to Engage."""
    for attempt in range(6):
        email = f"Trace.{uuid.uuid4().hex[:8]}+Fan{attempt}@Example.com"
        traced.send(email, "granted")
        trace_id = traced.trace_of(_contact_id(traced, email))

        def delivered(trace_id: str = trace_id) -> list[ReceivedSpan] | None:
            spans = traced.spans(trace_id)
            done = [s for s in spans if s.attributes.get("consent_relay.outcome") == "delivered"]
            return spans if len(done) == 2 else None

        spans = wait_for(delivered, 45, "both deliveries' spans")
        wait_for(lambda t=trace_id: len([s for s in traced.spans(t) if s.kind == CLIENT]) >= 2)
        spans = traced.spans(trace_id)
        if any(span.name == "consent_relay.dispatch" for span in spans):
            for destination in ("engage", "engage_eu"):
                chain, via_dispatch = _chain(spans, destination)
                assert via_dispatch and {span.trace_id for span in chain} == {trace_id}
            _assert_no_address(traced, email)
            return
    pytest.fail("no webhook's deliveries went through the dispatch task in 6 tries")
