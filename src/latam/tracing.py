"""W3C trace context from the HTTP publish to the store write, with OpenTelemetry.

The API continues the caller's ``traceparent`` (or Cloud Run's ``X-Cloud-Trace-Context``),
writes the publish span's context into each message's ``traceparent`` attribute, and the
worker starts its store-write span as a child of it: one trace id links both. Spans are
exported over OTLP/HTTP only when ``LATAM_OTLP_ENDPOINT`` is set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
CLOUD_TRACE = "x-cloud-trace-context"
PROPAGATOR = TraceContextTextMapPropagator()
_CLOUD_TRACE = re.compile(r"^([0-9a-f]{32})/(\d{1,20})(?:;o=([01]))?$")
tracer = trace.get_tracer("latam")


def configure(*, service_name: str, otlp_endpoint: str) -> None:
    """Install the tracer provider; export only when an endpoint is configured."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=None if otlp_endpoint else ALWAYS_OFF,
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)


def incoming_traceparent(headers: Mapping[str, str]) -> str | None:
    """The caller's W3C traceparent, or one translated from X-Cloud-Trace-Context."""
    if value := headers.get(TRACEPARENT):
        return value
    match = _CLOUD_TRACE.match(headers.get(CLOUD_TRACE, "").strip().lower())
    if not match:
        return None
    trace_id, span_id, sampled = match.groups()
    span = int(span_id) & (2**64 - 1)
    return f"00-{trace_id}-{span:016x}-{'01' if sampled != '0' else '00'}"


def context_from(traceparent: str | None) -> Context | None:
    """The parent context a traceparent describes (None when absent or malformed)."""
    if not traceparent:
        return None
    ctx = PROPAGATOR.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def current_traceparent() -> str | None:
    """The traceparent of the active span, to carry in message attributes."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a traceparent, for log correlation."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
