"""The console's overview figures from metrics, and its signed sessions, without an app."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from latam.console import overview, readings
from latam.console.readings import History, Reading
from latam.console.sessions import Signer, fingerprint
from latam.metrics import FRESHNESS_BUCKETS, LATENCY_BUCKETS


def test_quantile_interpolates_within_a_bucket_as_prometheus_does() -> None:
    buckets = ((0.1, 50.0), (1.0, 99.0), (math.inf, 100.0))
    assert readings.quantile(0.5, buckets) == pytest.approx(0.1)
    assert readings.quantile(0.99, buckets) == pytest.approx(1.0)
    assert readings.quantile(0.995, buckets) == 1.0  # past the last finite bound
    assert readings.quantile(0.99, ((1.0, 0.0), (math.inf, 0.0))) is None


def test_readings_sum_the_series_the_overview_needs() -> None:
    registry = CollectorRegistry()
    stored = Counter("latam_messages_stored", "", ["topic"], registry=registry)
    fresh = Histogram(
        "latam_message_freshness_seconds", "", buckets=FRESHNESS_BUCKETS, registry=registry
    )
    requests = Counter(
        "latam_http_requests", "", ["route", "method", "status_class"], registry=registry
    )
    latency = Histogram(
        "latam_http_request_duration_seconds",
        "",
        ["route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    stored.labels(topic="a").inc(3)
    stored.labels(topic="b").inc(4)
    for seconds in (0.2, 0.2, 90.0):
        fresh.observe(seconds)
    requests.labels(route="/v1/topics", method="GET", status_class="2xx").inc(9)
    requests.labels(route="/v1/topics", method="POST", status_class="5xx").inc(1)
    requests.labels(route="/healthz", method="GET", status_class="5xx").inc(50)  # not in SLOs
    latency.labels(route="/v1/topics", method="GET").observe(0.01)
    latency.labels(route="/v1/topics", method="GET").observe(2.0)
    found = readings.read(registry.collect(), now=10.0)
    assert found.stored == 7
    assert found.stored_fresh == (2.0, 3.0)
    assert (found.requests, found.failed, found.reads, found.fast_reads) == (10, 1, 2, 1)
    line = overview._local_slo("availability", "A", 0.999, found)
    assert line.state == "exhausted"  # 10 % failed against a 0.1 % budget
    assert line.budget_left == pytest.approx(1 - 0.1 / 0.001)
    assert overview._local_slo("read-latency", "L", 0.4, found).state == "ok"
    assert overview._local_slo("unheard-of", "U", 0.9, found).reason == "needs Prometheus"


def test_history_compares_with_a_reading_old_enough() -> None:
    history = History()
    assert history.add(Reading(0.0, 10.0)) is None
    assert history.add(Reading(2.0, 12.0)) is None  # too close to compare
    base = history.add(Reading(10.0, 30.0))
    assert base is not None
    assert base.at == 0.0
    rate, note = overview._ingest_rate(Reading(10.0, 30.0), base)
    assert rate == pytest.approx(2.0)
    assert "over the last 10 s" in note
    later = history.add(Reading(readings.WINDOW_SECONDS + 5, 40.0))
    assert later is not None
    assert later.at == 10.0  # older readings dropped out of the window
    assert history.add(Reading(1000.0, 1.0)) is None  # a process restarted: start again
    assert overview._ingest_rate(Reading(0.0, None), None)[0] is None


def test_sessions_are_signed_expire_and_have_their_own_csrf_token() -> None:
    now = [1000.0]
    signer = Signer(b"k" * 32, lifetime=60, clock=lambda: now[0])
    cookie = signer.issue("abc123def456", fingerprint("hash"))
    session = signer.read(cookie)
    assert session is not None
    assert (session.key_id, session.fingerprint) == ("abc123def456", fingerprint("hash"))
    visitor = signer.read(signer.issue())
    assert visitor is not None
    assert visitor.key_id is None
    assert signer.csrf_ok(session, signer.csrf(session))
    assert not signer.csrf_ok(session, signer.csrf(visitor))
    assert not signer.csrf_ok(session, None)
    forged = cookie.replace("abc123def456", "000000000000")
    assert signer.read(forged) is None
    assert Signer(b"o" * 32).read(cookie) is None
    now[0] += 61
    assert signer.read(cookie) is None
