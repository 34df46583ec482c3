"""Traces in one process, with the SDK's in-memory exporter: the intake request's span, the
traceparent on the message it publishes, the delivery task continuing that trace, the Engage
calls under it (the real emulator over HTTP), the dispatch fan-out's hop, and no address in
any attribute. The trace across a real worker process: tests/integration/test_tracing.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from relay.config.settings import TracingSettings
from relay.errors import RelayError
from relay.messaging.names import DELIVER_TASK
from relay.telemetry import tracing
from tests.helpers.observability_world import EMAIL, Relay, payload
from workers.celery_app import create_celery_app
from workers.delivery.fanout import fan_out


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(TracingSettings(), "test", SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def _broker_headers(settings: Any) -> list[dict[str, Any]]:
    found = []
    for path in sorted(Path(settings.data_dir, "broker").glob("*.msg")):
        message = json.loads(path.read_bytes())
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append({"args": args, **message["headers"]})
    return found


def _ids(traceparent: str) -> tuple[int, int]:
    """(trace id, parent span id) of a W3C traceparent: version-trace-parent-flags."""
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16)


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def assert_no_address(spans: list[ReadableSpan]) -> None:
    for span in spans:
        for key, value in {**(span.attributes or {}), **dict(span.resource.attributes)}.items():
            text = json.dumps(value) if not isinstance(value, str) else value
            assert "@" not in text, (span.name, key, value)
        assert "@" not in span.name


def test_one_trace_from_the_webhook_to_the_engage_call(
    relay: Relay, spans: InMemorySpanExporter
) -> None:
    # The relay fixture built its app with tracing off; the exporter is installed after.
    response = relay.post(payload(consent="denied"))
    assert response.status_code == 202
    [intake] = _named(list(spans.get_finished_spans()), "POST /webhooks/<source_name>")
    assert intake.kind is SpanKind.SERVER
    assert intake.attributes is not None
    assert intake.attributes["http.response.status_code"] == 202
    assert intake.attributes["consent_relay.source"] == "signup"
    assert list(intake.attributes["consent_relay.contact_ids"]) == [1]  # type: ignore[arg-type]
    [message] = _broker_headers(relay.settings)
    assert message["args"] == ["engage", 1]
    carried = message[tracing.TRACEPARENT]
    assert _ids(carried) == (intake.context.trace_id, intake.context.span_id)

    spans.clear()
    task = create_celery_app(relay.settings).tasks[DELIVER_TASK]
    result = task.apply(args=["engage", 1], headers={tracing.TRACEPARENT: carried})
    assert result.get() == "delivered"

    finished = list(spans.get_finished_spans())
    [deliver] = _named(finished, DELIVER_TASK)
    assert deliver.kind is SpanKind.CONSUMER
    assert deliver.context.trace_id == intake.context.trace_id
    assert deliver.parent is not None and deliver.parent.span_id == intake.context.span_id
    assert deliver.attributes == {
        "consent_relay.destination": "engage",
        "consent_relay.contact_id": 1,
        "consent_relay.outcome": "delivered",
    }
    calls = [span for span in finished if span.kind is SpanKind.CLIENT]
    assert calls, "no span for the Engage calls"
    for call in calls:
        assert call.parent is not None and call.parent.span_id == deliver.context.span_id
        assert call.attributes is not None
        assert call.attributes["consent_relay.destination"] == "engage"
        assert call.attributes["url.template"].startswith("/api/rest/contact/")  # type: ignore[union-attr]
        assert call.attributes["http.response.status_code"] in (200, 201, 204, 400)
    assert _named(finished, "POST /api/rest/contact/update")
    assert_no_address(finished)
    assert_no_address([intake])


def test_the_dispatch_fan_out_keeps_each_entry_in_its_own_trace(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("first webhook") as first:
        first_parent = tracing.traceparent()
    with tracing.span("second webhook") as second:
        second_parent = tracing.traceparent()
    published: list[tuple[Any, ...]] = []
    entries = [["engage", 1, "req-1", first_parent], ["engage", 2, None, second_parent]]
    assert fan_out(entries, lambda *args: published.append(args)) == 2

    dispatches = _named(list(spans.get_finished_spans()), "consent_relay.dispatch")
    assert len(dispatches) == 2
    for webhook, dispatch, (_, contact_id, _, carried) in zip(
        (first, second), dispatches, published, strict=True
    ):
        assert dispatch.kind is SpanKind.PRODUCER
        assert dispatch.context.trace_id == webhook.get_span_context().trace_id
        assert dispatch.parent is not None
        assert dispatch.parent.span_id == webhook.get_span_context().span_id
        assert dispatch.attributes is not None
        assert dispatch.attributes["consent_relay.contact_id"] == contact_id
        # The delivery task continues from the dispatch span, in the webhook's trace.
        assert _ids(carried) == (dispatch.context.trace_id, dispatch.context.span_id)
    assert first.get_span_context().trace_id != second.get_span_context().trace_id


def test_a_failure_names_its_class_and_status_never_its_message(
    spans: InMemorySpanExporter,
) -> None:
    class Refused(RelayError):
        http_status = 422

    with pytest.raises(Refused), tracing.span("refused"):
        raise Refused(f"the answer quoted {EMAIL}")
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes == {"error.type": "Refused", "http.response.status_code": 422}
    assert span.events == ()  # no exception event: its message would carry the address
    assert EMAIL not in (span.status.description or "")


def test_clean_keeps_ids_and_drops_anything_with_an_address() -> None:
    attributes = {
        "consent_relay.contact_id": 7,
        "consent_relay.destination": "engage",
        "url.template": "/contacts/v3/email/{email}",
        "consent_relay.contact_ids": [1, 2],
        "leaked": EMAIL,
        "leaked.encoded": "jane%40example.com".replace("%40", "@"),
        "leaked.list": ["a", EMAIL],
        "none": None,
        "object": {"email": EMAIL},
    }
    assert tracing.clean(attributes) == {
        "consent_relay.contact_id": 7,
        "consent_relay.destination": "engage",
        "url.template": "/contacts/v3/email/{email}",
        "consent_relay.contact_ids": [1, 2],
    }


def test_off_by_default_no_span_is_recorded_and_no_header_sent(relay: Relay) -> None:
    tracing.shutdown_tracing()
    assert tracing.configure_tracing(TracingSettings(), "test") is False
    assert TracingSettings().enabled is False
    with tracing.span("nothing") as span:
        assert not span.is_recording()
        assert tracing.traceparent() is None
    assert relay.post(payload()).status_code == 202
    [message] = _broker_headers(relay.settings)
    assert tracing.TRACEPARENT not in message
