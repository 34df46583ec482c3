"""OpenTelemetry traces: one trace per decision, from the webhook to each destination's call.

Off by default (`[tracing] enabled`); when on, finished spans go in batches over OTLP/HTTP to
`[tracing] endpoint`. The web configures it in its app factory, each worker process after the
pool forks it (workers/main.py). Nothing here runs at import time, and this module keeps its
own provider rather than OpenTelemetry's global one, so a test can install an in-memory
exporter and a process that never enabled tracing pays for no-op spans only.

The context crosses the broker as a W3C `traceparent` message header
(https://www.w3.org/TR/trace-context/#traceparent-header), next to the request id: the web's
background publisher and the dispatch task's fan-out carry it per delivery
(docs/operations/tracing.md).

No e-mail address in a span: the attributes are ids, names, outcomes and HTTP statuses,
spans are hand-written (no auto-instrumentation: requests' would record URLs, and Engage's
and Dotdigital's URLs hold the address), exceptions are recorded by class name only, and
`clean` drops any text value that holds an "@" as a last guard.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from relay.config.settings import TracingSettings

TRACEPARENT = "traceparent"
SCOPE = "consent_relay"
Attributes = Mapping[str, Any]
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_OP = trace.NoOpTracerProvider().get_tracer(SCOPE)
_state: dict[str, TracerProvider | None] = {"provider": None}


def configure_tracing(
    settings: TracingSettings, role: str, processor: SpanProcessor | None = None
) -> bool:
    """Install this process's provider (replacing any earlier one); True when tracing is on.
    `processor` overrides the OTLP exporter (tests: the SDK's in-memory exporter)."""
    shutdown_tracing()
    if processor is None and not settings.enabled:
        return False
    if processor is None:
        # Imported here: the exporter pulls in requests and protobuf, needed only when on.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        delay = settings.export_delay_seconds * 1000
        exporter = OTLPSpanExporter(endpoint=settings.endpoint)
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=delay)
    resource = Resource.create(
        {"service.name": settings.service_name, "service.namespace": SCOPE, "process.role": role}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    _state["provider"] = provider
    return True


def shutdown_tracing() -> None:
    """Export what is pending and stop; spans after this are no-ops until configured again."""
    provider, _state["provider"] = _state["provider"], None
    if provider is not None:
        provider.shutdown()


def _tracer() -> trace.Tracer:
    provider = _state["provider"]
    return provider.get_tracer(SCOPE) if provider is not None else _NO_OP


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """A span, current inside the block: a child of the current one, or of `parent` (a
    `traceparent` from a message). An exception marks it failed with its class name (never
    its message, which may quote a vendor's answer) and, when it has one, its HTTP status."""
    context = _PROPAGATOR.extract({TRACEPARENT: parent}) if parent else None
    with _tracer().start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=clean(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            failed(current, exc)
            raise


def failed(current: Span, exc: BaseException) -> None:
    status = getattr(exc, "http_status", None) or getattr(exc, "code", None)
    extra = {"http.response.status_code": status} if type(status) is int else {}
    annotate(current, {"error.type": type(exc).__name__, **extra})
    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def annotate(current: Span, attributes: Attributes) -> None:
    """Set attributes on a span, through `clean`."""
    if current.is_recording():
        current.set_attributes(clean(attributes))


def traceparent() -> str | None:
    """The current span as a `traceparent` value for a message; None when nothing is traced."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def clean(attributes: Attributes) -> dict[str, Any]:
    """Only scalar values and lists of them, None left out, and no text that holds an "@"
    (an address that slipped in: dropped, not masked, since a mask still narrows it down)."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if isinstance(value, str | bool | int | float):
            if not _has_address(value):
                out[key] = value
        elif isinstance(value, Sequence) and not isinstance(value, bytes):
            items = [v for v in value if isinstance(v, str | bool | int | float)]
            if len(items) == len(value) and not any(_has_address(v) for v in items):
                out[key] = list(items)
    return out


def _has_address(value: Any) -> bool:
    return isinstance(value, str) and "@" in value


@contextmanager
def destination_call(destination: str, method: str, template: str) -> Iterator[Span]:
    """One HTTP call to a destination. `template` is the path with the address left out
    (`/contacts/v3/email/{email}`): the real URL is never recorded."""
    attributes = {
        "consent_relay.destination": destination,
        "http.request.method": method,
        "url.template": template,
    }
    with span(f"{method} {template}", kind=SpanKind.CLIENT, attributes=attributes) as current:
        yield current
