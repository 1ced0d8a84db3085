"""Trace ids reach the latency and freshness histograms as exemplars, shown only in the
OpenMetrics exposition, and only for a sampled trace."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from latam import metrics

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
# What Prometheus 2.42 sends (checked against a real scrape).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@contextmanager
def span(sampler: Sampler) -> Iterator[str]:
    """A current span under ``sampler``; yields its trace id in hex."""
    tracer = TracerProvider(sampler=sampler).get_tracer("test")
    with tracer.start_as_current_span("request") as current:
        yield format(current.get_span_context().trace_id, "032x")


def lines_with(body: bytes, *parts: str) -> list[str]:
    return [line for line in body.decode().splitlines() if all(p in line for p in parts)]


def test_latency_exemplar_in_openmetrics_only() -> None:
    route = "/exemplar-test/latency"
    with span(ALWAYS_ON) as trace_id:
        metrics.HTTP_DURATION.labels(route=route, method="GET").observe(0.2)
    body, content_type = metrics.exposition(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    [bucket] = lines_with(body, "latam_http_request_duration_seconds_bucket", route, 'le="0.25"')
    assert re.search(rf'# {{trace_id="{trace_id}"}} 0\.2 \d', bucket), bucket

    text, text_type = metrics.exposition("")
    assert text_type.startswith("text/plain; version=0.0.4")
    assert lines_with(text, "latam_http_request_duration_seconds_bucket", route)
    assert b"trace_id" not in text


def test_freshness_exemplar_from_a_stored_batch() -> None:
    with span(ALWAYS_ON) as trace_id:
        metrics.observe_many(metrics.FRESHNESS, 0.7, 3)
    body, _ = metrics.exposition(PROMETHEUS_ACCEPT)
    exemplars = lines_with(body, "latam_message_freshness_seconds_bucket", trace_id)
    assert len(exemplars) == 1
    assert 'le="1.0"' in exemplars[0]


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, None], ids=["unsampled", "no-span"])
def test_no_exemplar_without_a_sampled_trace(sampler: Sampler | None) -> None:
    registry = CollectorRegistry()
    histogram = metrics.TracedHistogram("h_seconds", "test", registry=registry)
    if sampler is None:
        histogram.observe(0.1)
    else:
        with span(sampler):
            histogram.observe(0.1)
    body = openmetrics_latest(registry)
    assert b'h_seconds_bucket{le="0.1"} 1.0\n' in body
    assert b"#" not in body.replace(b"# HELP", b"").replace(b"# TYPE", b"").replace(b"# EOF", b"")


def test_a_given_exemplar_wins() -> None:
    registry = CollectorRegistry()
    histogram = metrics.TracedHistogram("g_seconds", "test", registry=registry)
    with span(ALWAYS_ON):
        histogram.observe(0.1, {"trace_id": "f" * 32})
    assert b'# {trace_id="' + b"f" * 32 + b'"} 0.1' in openmetrics_latest(registry)
