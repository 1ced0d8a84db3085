"""Prometheus metrics of the API and the worker.

Names follow Prometheus conventions: ``latam_`` prefix, base units, ``_total`` counters.
Labels are bounded: HTTP routes are templates, never raw paths; ``topic`` is bounded by
the number of topics an administrator created; ``reason`` is a fixed vocabulary.

Several processes (``latam serve`` runs the API and the worker) share one exposition
through prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set;
gauges declare how their per-process values combine.

The latency and freshness histograms carry the trace id of a sampled trace as their
exemplar; only the OpenMetrics exposition (served when the scraper asks for it) shows
exemplars, and multiprocess mode keeps none.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.samples import Exemplar

from latam import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def trace_exemplar() -> dict[str, str] | None:
    """The current span's trace id as exemplar labels, when its trace is sampled (and so
    exported: the id leads to a trace); None otherwise, e.g. with tracing off."""
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x")}


class TracedHistogram(Histogram):
    """A histogram whose observations made inside a sampled trace carry its trace id as
    the exemplar of their bucket: a slow bucket on a dashboard links to a slow trace."""

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar or trace_exemplar())


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
HTTP_DURATION = TracedHistogram(
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
STREAMS_OPEN = Gauge(
    "latam_streams_open",
    "Live tails (GET /v1/topics/{id}/stream) open now.",
    multiprocess_mode="livesum",
)
STREAM_EVENTS = Counter(
    "latam_stream_events",
    "Events sent to live-tail clients, by kind (message, error).",
    ["kind"],
)
API_KEY_LOOKUPS = Counter(
    "latam_api_key_lookups",
    "Reads of the key table to verify a bearer token, by result (found, unknown); tokens"
    " refused by their shape or answered from the cache cost none.",
    ["result"],
)
STATS_CACHE = Counter(
    "latam_stats_cache_lookups",
    "Stats answers looked up among those kept: hit (given again), stale (its topic changed"
    " since) or miss (not kept).",
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
FRESHNESS = TracedHistogram(
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
# Connection pools, labelled by pool (``store``): set from the pool's own counters when
# sampled (at every scrape, and every POOL_SAMPLE_SECONDS in multiprocess mode), never per
# query; absent from a process without one (the canary), never a fake 0.
DB_POOL_CONNECTIONS = Gauge(
    "latam_db_pool_connections",
    "Connections of a pool by state: in_use (checked out) or idle (open, in the pool).",
    ["pool", "state"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "latam_db_pool_waiting",
    "Threads waiting for a connection because the pool is at its limit.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "latam_db_pool_max_connections",
    "Most connections the pool opens: its size plus its overflow.",
    ["pool"],
    multiprocess_mode="livesum",
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
    exemplar = trace_exemplar()
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            if exemplar:
                histogram._buckets[i].set_exemplar(Exemplar(exemplar, amount, time.time()))
            break


def exposition(accept: str = "") -> tuple[bytes, str]:
    """This process's metrics, or every process's in multiprocess mode, and their content
    type: OpenMetrics (the format that carries exemplars) when the scraper's ``Accept``
    header asks for it, the Prometheus text format otherwise."""
    encoder, content_type = choose_encoder(accept)
    sample_pools()
    return encoder(_registry(with_process=True)), content_type


def families() -> list[Metric]:
    """The metric families ``exposition`` shows (without process CPU and memory): this
    process's, or every process's in multiprocess mode, for readers inside the process
    (the web console's overview)."""
    return list(_registry(with_process=False).collect())


def _registry(*, with_process: bool) -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if with_process:
        registry.register(SharedProcessCollector(directory))
    return registry


_PID_FILE = re.compile(r"_(\d+)\.db$")


class SharedProcessCollector(Collector):
    """CPU time and resident memory of the processes that share a multiprocess directory,
    summed: one ``latam serve`` (or multi-process ``latam api``) is one instance, and
    prometheus_client's process metrics describe a single process. A process that exited
    drops out of the sums (a counter reset to ``rate()``)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        pids = {os.getpid()}
        pids.update(
            int(m.group(1)) for n in os.listdir(self.directory) if (m := _PID_FILE.search(n))
        )
        totals: dict[str, float] = {}
        for pid in sorted(pids):
            for family in ProcessCollector(pid=_returning(pid), registry=None).collect():
                for sample in family.samples:
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        if "process_cpu_seconds_total" in totals:
            yield CounterMetricFamily(
                "process_cpu_seconds",
                "Total user and system CPU time of the instance's processes in seconds.",
                value=totals["process_cpu_seconds_total"],
            )
        if "process_resident_memory_bytes" in totals:
            yield GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory of the instance's processes in bytes.",
                value=totals["process_resident_memory_bytes"],
            )


def _returning(pid: int) -> Callable[[], int]:
    return lambda: pid


POOL_SAMPLE_SECONDS = 5.0


class PoolSource(Protocol):
    def pool_usage(self) -> tuple[int, int, int, int] | None:
        """(in use, idle, waiting, limit) of a connection pool; None if it cannot tell."""


_SOURCES: weakref.WeakSet[PoolSource] = weakref.WeakSet()
_SAMPLER: list[threading.Thread] = []
_POOLS_LOCK = threading.Lock()


def watch_pool(source: PoolSource) -> None:
    """Report ``source``'s connection pool in the ``latam_db_pool_*{pool="store"}`` gauges
    (the store's pools of a process add up). Sampled at
    every scrape; in multiprocess mode also every POOL_SAMPLE_SECONDS by a daemon thread,
    since another process may serve /metrics. Nothing is added to a query's path."""
    with _POOLS_LOCK:
        _SOURCES.add(source)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not _SAMPLER:
            _SAMPLER.append(threading.Thread(target=_sample_forever, daemon=True))
            _SAMPLER[0].start()


def _sample_forever() -> None:
    while True:
        time.sleep(POOL_SAMPLE_SECONDS)
        sample_pools()


def sample_pools() -> None:
    """Set the pool gauges from the pools this process watches (summed)."""
    with _POOLS_LOCK:
        sources = list(_SOURCES)
    usage = [found for found in (source.pool_usage() for source in sources) if found]
    if not usage:
        return
    in_use, idle, waiting, limit = (sum(column) for column in zip(*usage, strict=True))
    DB_POOL_CONNECTIONS.labels(pool="store", state="in_use").set(in_use)
    DB_POOL_CONNECTIONS.labels(pool="store", state="idle").set(idle)
    DB_POOL_WAITING.labels(pool="store").set(waiting)
    DB_POOL_MAX.labels(pool="store").set(limit)
