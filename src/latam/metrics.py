"""Prometheus metrics of the API and the worker.

Names follow Prometheus conventions: ``latam_`` prefix, base units, ``_total`` counters.
Labels are bounded: HTTP routes are templates, never raw paths; ``topic`` is bounded by
the number of topics an administrator created; ``reason`` is a fixed vocabulary.

Several processes (``latam serve`` runs the API and the worker) share one exposition
through prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set;
gauges declare how their per-process values combine.
"""

from __future__ import annotations

import os
import platform

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY

from latam import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

BUILD_INFO = Gauge(
    "latam_build_info",
    "Build information; the value is always 1.",
    ["version", "python_version"],
    multiprocess_mode="max",
)
HTTP_REQUESTS = Counter(
    "latam_http_requests",
    "HTTP requests served, by route template, method and status class.",
    ["route", "method", "status_class"],
)
HTTP_DURATION = Histogram(
    "latam_http_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "latam_http_requests_in_flight",
    "HTTP requests being served now.",
    multiprocess_mode="livesum",
)
API_KEY_LOOKUPS = Counter(
    "latam_api_key_lookups",
    "Reads of the key table to verify a bearer token, by result (found, unknown); tokens"
    " refused by their shape or answered from the cache cost none.",
    ["result"],
)
MESSAGES_PUBLISHED = Counter(
    "latam_messages_published", "Messages accepted onto the broker.", ["topic"]
)
MESSAGES_RECEIVED = Counter("latam_messages_received", "Deliveries the worker received.")
MESSAGES_STORED = Counter(
    "latam_messages_stored", "Messages newly written to the store.", ["topic"]
)
RETENTION_DELETED = Counter(
    "latam_retention_deleted",
    "Messages deleted because their topic's retention expired.",
    ["topic"],
)
MESSAGES_DUPLICATES = Counter(
    "latam_messages_duplicates",
    "Deliveries skipped because the message id was already stored.",
    ["topic"],
)
MESSAGES_NACKED = Counter(
    "latam_messages_nacked", "Deliveries returned for a later retry.", ["reason"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "latam_messages_dead_lettered", "Messages moved to the dead-letter queue.", ["reason"]
)
BATCH_SIZE = Histogram(
    "latam_worker_batch_messages", "Messages per store write.", buckets=BATCH_BUCKETS
)
STORE_WRITE_DURATION = Histogram(
    "latam_store_write_duration_seconds",
    "Time to write one batch to the store.",
    buckets=LATENCY_BUCKETS,
)
FRESHNESS = Histogram(
    "latam_message_freshness_seconds",
    "Delay from publish (accepted) to stored: the end-to-end freshness SLI.",
    buckets=FRESHNESS_BUCKETS,
)
# Broker-side gauges carry the broker's name and exist only once the broker has answered:
# a broker that cannot tell (Pub/Sub: the truth is its own subscription metrics,
# num_undelivered_messages and oldest_unacked_message_age) exports nothing, never a fake 0.
BACKLOG = Gauge(
    "latam_broker_backlog_messages",
    "Messages waiting on the broker for the worker; absent where the broker cannot tell.",
    ["broker"],
    multiprocess_mode="mostrecent",
)
OLDEST_UNACKED = Gauge(
    "latam_broker_oldest_unacked_age_seconds",
    "Age of the oldest message not yet acknowledged; 0 when the backlog is empty, absent "
    "where the broker cannot tell.",
    ["broker"],
    multiprocess_mode="mostrecent",
)
DEAD_LETTERS = Gauge(
    "latam_dead_letter_messages",
    "Messages currently in the dead-letter queue; absent where the broker cannot tell.",
    ["broker"],
    multiprocess_mode="mostrecent",
)
DEPENDENCY_UP = Gauge(
    "latam_dependency_up",
    "Whether a dependency answered its last check (1) or not (0).",
    ["dependency"],
    multiprocess_mode="mostrecent",
)
# The synthetic canary (``latam canary``): one marked message per round, published and
# read back through the API. It gives availability and freshness signals when no one
# else publishes. Labelled by the canary's topic, so that no other process exports them
# (an unlabelled gauge would read 0 everywhere: a false "never succeeded"); the canary
# creates every series at its start, so one that never succeeds is visible too.
CANARY_RESULTS = ("ok", "publish_failed", "read_failed", "timeout")
CANARY_ROUNDS = Counter(
    "latam_canary_rounds",
    "Canary rounds by result: ok, publish_failed, read_failed or timeout.",
    ["topic", "result"],
)
CANARY_ROUND_TRIP = Histogram(
    "latam_canary_round_trip_seconds",
    "From the canary's publish request to the message read back through the API.",
    ["topic"],
    buckets=FRESHNESS_BUCKETS,
)
CANARY_LAST_SUCCESS = Gauge(
    "latam_canary_last_success_timestamp_seconds",
    "Unix time of the canary's last successful round (its start time until the first).",
    ["topic"],
    multiprocess_mode="max",
)

BUILD_INFO.labels(version=__version__, python_version=platform.python_version()).set(1)
DEAD_LETTER_REASONS = (
    "invalid_json",
    "not_object",
    "too_large",
    "missing_topic",
    "invalid_topic",
    "unknown_topic",
    "invalid_id",
    "invalid_attributes",
    "invalid_timestamp",
    "invalid_body",
    "invalid_message",
    "store_rejected",
    "max_delivery_attempts",
)
NACK_REASONS = ("store_unavailable",)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Every label value exists from start-up, so a first increase() is seen and every series
# is in the exposition before it happens.
for _reason in DEAD_LETTER_REASONS:
    MESSAGES_DEAD_LETTERED.labels(reason=_reason)
for _reason in NACK_REASONS:
    MESSAGES_NACKED.labels(reason=_reason)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """``count`` observations of the same ``amount`` at the cost of one: a stored batch
    shares a few publish times. Same effect as ``observe`` called ``count`` times
    (tests/unit/test_metrics.py holds it to that); prometheus_client has no weighted
    observe, so this uses its bucket and sum values directly."""
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process, or of every process in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
