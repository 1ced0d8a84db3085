"""The status page's logic: SLO states and budget arithmetic, the Prometheus adapter
against a real (fake) Prometheus over HTTP, the canary's hourly history on the memory
store, the overall state, and the per-process cache."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

import httpx
import pytest
from google.auth.exceptions import RefreshError

from latam import status as status_package
from latam.domain import NewMessage
from latam.prometheus import MAX_ANSWER_BYTES, PrometheusSource
from latam.promql import QueryFailed
from latam.service import Service
from latam.status import canary as canary_module
from latam.status import page as page_module
from latam.status.canary import HOURS, CanaryStatus, read_canary
from latam.status.page import StatusPage, overall
from latam.status.slos import Catalog, Slo, SloStatus, bad_ratio, judge, load_catalog
from tests import fakes
from tests.fake_prometheus import FakePrometheus, Reply, error, vector
from tests.fakes import MemoryBroker, MemoryStore
from tests.support import free_port

SLO = Slo("availability", "Requests succeed", 0.999, "99.9% succeed.", 'bad{slo="a"}[$window]')
NOW = datetime(2026, 3, 10, 12, 30, 15, tzinfo=UTC)


# -- SLO states and arithmetic ----------------------------------------------------------


def test_a_healthy_slo_is_ok_with_its_budget_arithmetic() -> None:
    found = judge(SLO, [0.0002], [0.0001], period_days=28)
    assert found.state == "ok"
    assert found.reason is None
    assert found.sli == pytest.approx(0.9998)
    assert found.error_budget_remaining == pytest.approx(0.8)  # 1 - 0.0002 / 0.001
    assert found.burn_rate_1h == pytest.approx(0.1)  # 0.0001 / 0.001


def test_a_fast_burn_in_the_last_hour_is_burning() -> None:
    found = judge(SLO, [0.0005], [0.02], period_days=28)
    assert found.state == "burning"
    assert found.burn_rate_1h == pytest.approx(20.0)
    assert found.error_budget_remaining == pytest.approx(0.5)
    # The page threshold itself does not burn: only above it.
    assert judge(SLO, [0.0005], [0.0144], period_days=28).state == "ok"
    assert judge(SLO, [0.0005], [0.01441], period_days=28).state == "burning"


@pytest.mark.parametrize(("bad", "left"), [(0.001, 0.0), (0.003, -2.0), (1.0, -999.0)])
def test_a_spent_budget_is_exhausted_and_may_be_negative(bad: float, left: float) -> None:
    found = judge(SLO, [bad], [0.0], period_days=28)
    assert found.state == "exhausted"
    assert found.error_budget_remaining == pytest.approx(left)
    assert found.sli == pytest.approx(1 - bad)


def test_exhausted_outranks_burning_and_a_failed_last_hour() -> None:
    assert judge(SLO, [0.002], [0.5], period_days=28).state == "exhausted"
    assert judge(SLO, [0.002], QueryFailed("metrics query timed out"), period_days=28).state == (
        "exhausted"
    )


def test_unknown_says_why_and_keeps_what_is_known() -> None:
    assert judge(SLO, None, None, period_days=28).reason == "no metrics source configured"
    failed = judge(SLO, QueryFailed("metrics query timed out"), [0.0], period_days=28)
    assert (failed.state, failed.reason, failed.sli) == ("unknown", "metrics query timed out", None)
    for no_traffic in ([], [float("nan")]):
        quiet = judge(SLO, no_traffic, [0.0], period_days=28)
        assert (quiet.state, quiet.reason) == ("unknown", "no traffic in the last 28 days")
    hour_failed = judge(SLO, [0.0002], QueryFailed("metrics source unreachable"), period_days=28)
    assert hour_failed.state == "unknown"
    assert hour_failed.reason == "metrics source unreachable"
    assert hour_failed.error_budget_remaining == pytest.approx(0.8)
    assert hour_failed.burn_rate_1h is None


def test_no_traffic_in_the_last_hour_burns_nothing() -> None:
    found = judge(SLO, [0.0002], [], period_days=28)
    assert (found.state, found.burn_rate_1h) == ("ok", None)


def test_the_bad_ratio_is_the_worst_series_within_zero_and_one() -> None:
    assert bad_ratio([0.1, 0.3, float("nan")]) == pytest.approx(0.3)
    assert bad_ratio([-1e-12]) == 0.0  # 1 - good/total can land a hair below zero
    assert bad_ratio([1.0000001]) == 1.0
    assert bad_ratio([float("nan")]) is None
    assert bad_ratio([]) is None


def test_the_json_of_an_slo_rounds_its_numbers() -> None:
    shown = judge(SLO, [0.000123456789], [0.0001], period_days=28).as_json()
    assert shown == {
        "name": "availability",
        "title": "Requests succeed",
        "description": "99.9% succeed.",
        "objective": 0.999,
        "state": "ok",
        "reason": None,
        "sli": 0.999877,
        "error_budget_remaining": 0.8765,
        "burn_rate_1h": 0.1,
    }


# -- the catalog ------------------------------------------------------------------------


def test_the_catalog_ships_in_the_package_and_loads() -> None:
    assert files("latam").joinpath("slo_catalog.json").is_file()
    catalog = load_catalog()
    assert catalog.period_days >= 1
    assert catalog.slos
    for slo in catalog.slos:
        assert 0 < slo.objective < 1
        assert "$window" not in slo.query("1h")
        assert "[1h]" in slo.query("1h")


def test_unknown_catalog_keys_are_ignored_and_missing_ones_refused() -> None:
    entry = {
        "name": "x",
        "title": "X",
        "objective": 0.99,
        "description": "d",
        "bad_ratio_query": "q[$window]",
        "alert": "new key",
    }
    loaded = load_catalog(json.dumps({"period_days": 7, "slos": [entry], "v": 2}).encode())
    assert loaded == Catalog(7, (Slo("x", "X", 0.99, "d", "q[$window]"),))
    for broken in (
        {"slos": [entry]},
        {"period_days": 7, "slos": [{k: v for k, v in entry.items() if k != "title"}]},
        {"period_days": 7, "slos": [{**entry, "objective": 1}]},
        {"period_days": 7, "slos": [{**entry, "bad_ratio_query": "q[28d]"}]},
        {"period_days": "28", "slos": [entry]},
    ):
        with pytest.raises(ValueError, match=r"SLO catalog|every SLO"):
            load_catalog(json.dumps(broken).encode())


# -- the Prometheus adapter against a real HTTP server ----------------------------------


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with FakePrometheus().running() as fake:
        yield fake


def evaluate(source: PrometheusSource, *queries: str) -> list[list[float] | QueryFailed]:
    return asyncio.run(source.evaluate(list(queries)))


def test_answers_are_parsed_like_prometheus_gives_them(prometheus: FakePrometheus) -> None:
    prometheus.answers["one"] = vector(0.25)
    prometheus.answers["two"] = vector("0.1", "0.4")
    prometheus.answers["nan"] = vector("NaN")
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "0.5"]}}
    prometheus.answers["scalar"] = Reply(body=json.dumps(scalar).encode())
    found = evaluate(PrometheusSource(prometheus.url), "one", "two", "nan", "scalar", "none")
    assert found[0] == [0.25]
    assert found[1] == [0.1, 0.4]
    assert isinstance(found[2], list)
    assert found[2][0] != found[2][0]  # NaN
    assert found[3] == [0.5]
    assert found[4] == []
    assert sorted(prometheus.queries) == ["nan", "none", "one", "scalar", "two"]
    assert all("authorization" not in headers for headers in prometheus.headers)


def test_queries_run_concurrently(prometheus: FakePrometheus) -> None:
    for name in "abcdef":
        prometheus.answers[name] = Reply(body=vector(0.0).body, delay=0.4)
    started = time.monotonic()
    found = evaluate(PrometheusSource(prometheus.url), *"abcdef")
    assert time.monotonic() - started < 1.5  # six queries of 0.4 s each, side by side
    assert found == [[0.0]] * 6


def test_prometheus_down_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    found = evaluate(PrometheusSource(url), "a", "b")
    assert [f.reason for f in found if isinstance(f, QueryFailed)] == [
        "metrics source unreachable"
    ] * 2


def test_a_slow_prometheus_times_out_within_the_bound(prometheus: FakePrometheus) -> None:
    prometheus.answers["slow"] = Reply(body=vector(0.0).body, delay=3)
    prometheus.answers["fast"] = vector(0.5)
    started = time.monotonic()
    slow, fast = evaluate(PrometheusSource(prometheus.url, timeout=0.3), "slow", "fast")
    assert time.monotonic() - started < 1.5
    assert isinstance(slow, QueryFailed)
    assert slow.reason == "metrics query timed out"
    assert fast == [0.5]


GARBAGE = {
    "not-json": (Reply(body=b"<html>502 Bad Gateway</html>"), "invalid answer"),
    "not-an-object": (Reply(body=b"[1, 2]"), "invalid answer"),
    "no-data": (Reply(body=b'{"status": "success"}'), "invalid answer"),
    "matrix": (
        Reply(body=b'{"status":"success","data":{"resultType":"matrix","result":[]}}'),
        "invalid answer",
    ),
    "bad-value": (
        Reply(
            body=b'{"status":"success","data":{"resultType":"vector",'
            b'"result":[{"metric":{},"value":[1,"lots"]}]}}'
        ),
        "invalid answer",
    ),
    "infinite": (vector("+Inf"), "invalid answer"),
    "huge": (Reply(body=b"x" * (MAX_ANSWER_BYTES + 10)), "invalid answer"),
    "error": (error(400), "metrics query failed (HTTP 400)"),
    "error-200": (Reply(body=error().body), "metrics query failed"),
    "server-error": (Reply(503, b"overloaded"), "metrics query failed (HTTP 503)"),
    "refused": (Reply(403, b"{}"), "metrics source refused access (HTTP 403)"),
}


def test_garbage_answers_fail_with_a_short_reason(prometheus: FakePrometheus) -> None:
    for query, (reply, _) in GARBAGE.items():
        prometheus.answers[query] = reply
    found = evaluate(PrometheusSource(prometheus.url), *GARBAGE)
    for (query, (_, reason)), answer in zip(GARBAGE.items(), found, strict=True):
        assert isinstance(answer, QueryFailed), query
        assert reason in answer.reason, (query, answer.reason)
        # No host, port, exception text or upstream error text in the reason.
        assert "127.0.0.1" not in answer.reason
        assert str(prometheus.url.rsplit(":", 1)[1]) not in answer.reason
        assert "secret detail" not in answer.reason
        assert "Error" not in answer.reason


class FakeCredentials:
    """google-auth credentials as the adapter uses them; ``refresh`` records its thread."""

    def __init__(self, *, valid: bool, fails: bool = False) -> None:
        self.valid = valid
        self.fails = fails
        self.token = "stale"
        self.refresh_threads: list[int] = []

    def refresh(self, request: Any) -> None:
        self.refresh_threads.append(threading.get_ident())
        if self.fails:
            raise RefreshError("metadata server at 169.254.169.254 said no")
        self.token = "fresh-token"
        self.valid = True

    def apply(self, headers: dict[str, str], token: str | None = None) -> None:
        headers["authorization"] = f"Bearer {token or self.token}"


GMP = "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus"


def test_managed_prometheus_gets_a_token_refreshed_off_the_event_loop() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=vector(0.001).body)

    credentials = FakeCredentials(valid=False)
    source = PrometheusSource(GMP, credentials=credentials, transport=httpx.MockTransport(handler))
    assert source.google
    assert evaluate(source, "a", "b") == [[0.001], [0.001]]
    assert len(credentials.refresh_threads) == 1
    assert credentials.refresh_threads[0] != threading.get_ident()
    assert {r.headers["authorization"] for r in seen} == {"Bearer fresh-token"}
    assert seen[0].url.path == "/v1/projects/p/location/global/prometheus/api/v1/query"
    evaluate(source, "c")  # still valid: no second refresh
    assert len(credentials.refresh_threads) == 1


def test_managed_prometheus_without_credentials_is_unknown_not_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may go out without a token")

    source = PrometheusSource(
        GMP,
        credentials=FakeCredentials(valid=False, fails=True),
        transport=httpx.MockTransport(handler),
    )
    found = evaluate(source, "a", "b")
    assert [f.reason for f in found if isinstance(f, QueryFailed)] == [
        "metrics source credentials unavailable"
    ] * 2


def test_other_hosts_get_no_google_token(prometheus: FakePrometheus) -> None:
    assert not PrometheusSource(prometheus.url).google
    assert not PrometheusSource("https://prometheus.example/monitoring.googleapis.com").google


# -- the canary's history on the memory store -------------------------------------------


def memory_service() -> Service:
    return Service(store=MemoryStore(), broker=MemoryBroker(), max_message_bytes=4096)


def store_rounds(
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
    published: list[datetime],
    *,
    delay: float = 0.25,
    topic: str = "latam-canary",
) -> None:
    """Canary rounds published at ``published``, each stored ``delay`` seconds later."""
    ids = service.store.topic_ids([topic])
    topic_id = ids[topic] if topic in ids else service.create_topic(name=topic).id
    with monkeypatch.context() as patch:
        for i, at in enumerate(published):
            patch.setattr(fakes, "utcnow", lambda at=at: at + timedelta(seconds=delay))
            message = NewMessage(topic, f"canary-{i}", '{"canary": true}', {}, at)
            service.store.write_messages([(topic_id, message)])


def every(seconds: float, *, since: datetime, until: datetime) -> list[datetime]:
    found, at = [], since
    while at < until:
        found.append(at)
        at += timedelta(seconds=seconds)
    return found


def test_no_canary_topic_is_absent() -> None:
    found = read_canary(memory_service(), "latam-canary", now=NOW)
    assert (found.state, found.reason) == ("absent", "no canary runs")
    assert len(found.buckets) == HOURS
    assert found.rounds_24h == 0
    assert found.buckets[-1].start == datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert found.buckets[0].start == datetime(2026, 3, 9, 13, tzinfo=UTC)


def test_rounds_every_30_s_are_ok_with_hourly_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    service = memory_service()
    start = datetime(2026, 3, 10, 10, 0, 0, tzinfo=UTC)
    store_rounds(service, monkeypatch, every(30, since=start, until=NOW - timedelta(seconds=5)))
    found = read_canary(service, "latam-canary", now=NOW)
    assert found.state == "ok", found.reason
    assert found.typical_spacing_seconds == pytest.approx(30)
    assert found.stale_after_seconds == pytest.approx(90)
    assert found.last_round_at == datetime(2026, 3, 10, 12, 30, 0, tzinfo=UTC)
    by_hour = {b.start.hour: b for b in found.buckets}
    assert [by_hour[h].rounds for h in (9, 10, 11, 12)] == [0, 120, 120, 61]
    assert by_hour[10].p50_delay_seconds == pytest.approx(0.25)
    assert by_hour[10].max_delay_seconds == pytest.approx(0.25)
    assert by_hour[9].p50_delay_seconds is None
    assert not any(b.sampled for b in found.buckets)
    assert found.rounds_24h == 301
    shown = found.as_json()
    assert shown["last_round_at"] == "2026-03-10T12:30:00.000000Z"
    assert shown["buckets"][-1]["start"] == "2026-03-10T12:00:00.000000Z"
    assert "latam-canary" not in json.dumps(shown)


def test_rounds_that_stopped_are_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    service = memory_service()
    start = NOW - timedelta(hours=2)
    store_rounds(service, monkeypatch, every(30, since=start, until=NOW - timedelta(minutes=10)))
    found = read_canary(service, "latam-canary", now=NOW)
    assert (found.state, found.reason) == ("stale", "no round for 10 min")
    assert found.last_round_at is not None
    # Just inside three spacings is still ok.
    recent = read_canary(service, "latam-canary", now=found.last_round_at + timedelta(seconds=89))
    assert recent.state == "ok"


def test_a_canary_topic_without_rounds_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    service = memory_service()
    service.create_topic(name="latam-canary")
    found = read_canary(service, "latam-canary", now=NOW)
    assert (found.state, found.reason) == ("stale", "no round in the last 24 hours")
    assert found.stale_after_seconds == pytest.approx(360)  # 3 x the longest interval
    # One round only: no spacing seen yet, so 3 x 120 s is the limit.
    store_rounds(service, monkeypatch, [NOW - timedelta(seconds=300)])
    assert read_canary(service, "latam-canary", now=NOW).state == "ok"


def test_a_busy_canary_is_read_with_a_bounded_number_of_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = memory_service()
    start = NOW - timedelta(hours=3)
    # A round every 0.5 s for three hours: 21,600 rows, the newest 0.2 s ago.
    store_rounds(service, monkeypatch, every(0.5, since=start, until=NOW - timedelta(seconds=0.1)))
    read = 0
    original = service.read_messages

    def counting(**kwargs: Any) -> Any:
        nonlocal read
        page = original(**kwargs)
        read += len(page.items)
        return page

    monkeypatch.setattr(service, "read_messages", counting)
    found = read_canary(service, "latam-canary", now=NOW)
    assert read <= 3000
    assert found.state == "ok", found.reason
    assert found.last_round_at is not None
    assert (NOW - found.last_round_at).total_seconds() < 1
    assert found.typical_spacing_seconds == pytest.approx(0.5)
    assert found.stale_after_seconds == pytest.approx(10)  # the floor
    assert found.rounds_24h == 21_600  # counted exactly, from the hourly stats
    assert sum(b.sampled for b in found.buckets) == 4  # 09:30-12:30 touches four hours


def test_a_store_that_is_down_is_unknown() -> None:
    service = memory_service()
    service.create_topic(name="latam-canary")
    store = service.store
    assert isinstance(store, MemoryStore)
    store.down = True
    found = read_canary(service, "latam-canary", now=NOW)
    assert (found.state, found.reason, found.buckets) == ("unknown", "store unavailable", ())


# -- the snapshot: overall state and cache ----------------------------------------------


def slo_in(state: str) -> SloStatus:
    return SloStatus(SLO, state)


@pytest.mark.parametrize(
    ("slos", "canary", "expected"),
    [
        (("ok", "ok"), "ok", "ok"),
        (("ok", "burning"), "ok", "degraded"),
        (("ok", "exhausted"), "ok", "degraded"),
        (("ok", "ok"), "stale", "degraded"),
        (("unknown", "burning"), "absent", "degraded"),
        (("ok", "unknown"), "ok", "unknown"),
        (("ok", "ok"), "absent", "unknown"),
        (("ok", "ok"), "unknown", "unknown"),
        ((), "ok", "unknown"),
    ],
)
def test_the_overall_status(slos: tuple[str, ...], canary: str, expected: str) -> None:
    assert overall(tuple(map(slo_in, slos)), CanaryStatus(canary)) == expected


CATALOG = Catalog(
    28,
    (
        SLO,
        Slo("latency", "Reads are fast", 0.99, "99% fast.", 'bad{slo="l"}[$window]'),
        Slo("freshness", "Data is fresh", 0.99, "99% fresh.", 'bad{slo="f"}[$window]'),
    ),
)


def test_a_snapshot_from_prometheus_and_the_store(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus.answers['bad{slo="a"}[28d]'] = vector(0.0002)
    prometheus.answers['bad{slo="a"}[1h]'] = vector(0.0001)
    prometheus.answers['bad{slo="l"}[28d]'] = vector(0.005)
    prometheus.answers['bad{slo="l"}[1h]'] = vector(0.2)
    prometheus.answers['bad{slo="f"}[28d]'] = Reply(503, b"")
    service = memory_service()
    store_rounds(service, monkeypatch, every(30, since=NOW - timedelta(hours=1), until=NOW))
    page = StatusPage(
        service,
        PrometheusSource(prometheus.url),
        canary_topic="latam-canary",
        catalog=CATALOG,
        now=lambda: NOW,
    )
    snapshot = asyncio.run(page.snapshot())
    assert [s.state for s in snapshot.slos] == ["ok", "burning", "unknown"]
    assert snapshot.slos[2].reason == "metrics query failed (HTTP 503)"
    assert snapshot.canary.state == "ok"
    assert snapshot.status == "degraded"
    shown = snapshot.as_json()
    assert shown["generated_at"] == "2026-03-10T12:30:15.000000Z"
    assert shown["period_days"] == 28
    text = json.dumps(shown)
    assert "127.0.0.1" not in text
    assert "latam-canary" not in text
    assert "bad{" not in text  # the queries stay inside


def test_without_a_source_every_slo_is_unknown() -> None:
    page = StatusPage(memory_service(), None, canary_topic="latam-canary", catalog=CATALOG)
    snapshot = asyncio.run(page.snapshot())
    assert {(s.state, s.reason) for s in snapshot.slos} == {
        ("unknown", "no metrics source configured")
    }
    assert snapshot.canary.state == "absent"
    assert snapshot.status == "unknown"


class CountingSource:
    def __init__(self, *, delay: float = 0.0, fails: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fails = fails

    async def evaluate(self, queries: Any) -> list[list[float] | QueryFailed]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fails:
            raise RuntimeError("a bug")
        return [[0.0] for _ in queries]


def test_one_computation_per_ttl_shared_by_concurrent_callers() -> None:
    source = CountingSource(delay=0.2)
    clock = [100.0]
    page = StatusPage(
        memory_service(),
        source,
        canary_topic="latam-canary",
        catalog=CATALOG,
        clock=lambda: clock[0],
    )

    async def many() -> set[int]:
        found = await asyncio.gather(*(page.snapshot() for _ in range(20)))
        return {id(snapshot) for snapshot in found}

    assert len(asyncio.run(many())) == 1
    assert source.calls == 1
    first = asyncio.run(page.snapshot())
    clock[0] += 29.9
    assert asyncio.run(page.snapshot()) is first
    assert page.age() == pytest.approx(29.9)
    assert source.calls == 1
    clock[0] += 0.2
    assert asyncio.run(page.snapshot()) is not first
    assert source.calls == 2


def test_a_failing_source_or_a_slow_store_does_not_take_the_page_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = memory_service()
    gate = threading.Event()

    def stuck(names: Any) -> dict[str, int]:
        gate.wait(5)
        return {}

    monkeypatch.setattr(service.store, "topic_ids", stuck)
    monkeypatch.setattr(page_module, "STORE_TIMEOUT", 0.2)
    page = StatusPage(
        service, CountingSource(fails=True), canary_topic="latam-canary", catalog=CATALOG
    )
    started = time.monotonic()
    snapshot = asyncio.run(page.snapshot())
    gate.set()
    assert time.monotonic() - started < 2
    assert {s.reason for s in snapshot.slos} == {"metrics query failed"}
    assert (snapshot.canary.state, snapshot.canary.reason) == ("unknown", "store timed out")


def test_the_package_exports_the_page() -> None:
    assert status_package.StatusPage is StatusPage
    assert (
        canary_module.TAIL_LIMIT * len(canary_module.TAIL_WINDOWS)
        + (canary_module.HOURS * canary_module.HOUR_SAMPLE)
        == 3000
    )
