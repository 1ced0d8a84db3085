"""``GET /status`` and ``/status.json`` on a real API over a real SQLite store, with
canary rounds stored and a fake Prometheus answering: the document's shape, nothing
sensitive in it, public with authentication on, cached, escaped, labelled in metrics."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from latam import metrics
from latam.api import status as status_routes
from latam.api.app import create_app
from latam.api.status import StatusDocument
from latam.api.status_html import CSS
from latam.bootstrap import build_keys, build_service
from latam.domain import NewMessage, utcnow
from latam.keys import create_key
from latam.prometheus import PrometheusSource
from latam.service import Service
from latam.settings import Settings
from latam.status import StatusPage
from latam.status.canary import read_canary
from latam.status.slos import Catalog, Slo, load_catalog
from latam.storage import migrate
from tests.databases import STORES, temporary_database
from tests.fake_prometheus import FakePrometheus, vector

CANARY = "latam-canary"
PRIVATE_TOPIC = "payroll-secret-topic"


@dataclass
class Api:
    client: TestClient
    service: Service
    prometheus: FakePrometheus
    clock: list[float]
    token: str
    data_dir: Path


def store_canary_rounds(service: Service, count: int, *, first: int = 0) -> None:
    """``count`` canary rounds, one every 30 s up to now."""
    topic_id = service.store.topic_ids([CANARY])[CANARY]
    now = utcnow()
    service.store.write_messages(
        [
            (
                topic_id,
                NewMessage(
                    CANARY,
                    f"canary-{first + i}",
                    '{"canary": true}',
                    {},
                    now - timedelta(seconds=30 * i + 1),
                    topic_id=topic_id,
                ),
            )
            for i in range(count)
        ]
    )


def build_api(
    tmp_path: Path, prometheus: FakePrometheus, catalog: Catalog | None = None, url: str = ""
) -> tuple[TestClient, Service, list[float], str]:
    settings = Settings(data_dir=tmp_path, auth="on")  # type: ignore[call-arg]
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    keys = build_keys(settings, service.store)
    _, token = create_key(keys.store, name="admin", scopes=["admin"])
    service.create_topic(name=CANARY)
    private = service.create_topic(name=PRIVATE_TOPIC)
    service.store.write_messages(
        [(private.id, NewMessage(PRIVATE_TOPIC, "m1", '{"salary": 1}', {}, topic_id=private.id))]
    )
    store_canary_rounds(service, 100)
    clock = [1000.0]
    page = StatusPage(
        service,
        PrometheusSource(url or prometheus.url),
        canary_topic=CANARY,
        catalog=catalog,
        clock=lambda: clock[0],
    )
    app = create_app(service, settings, keys, status_page=page)
    return TestClient(app), service, clock, token


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with FakePrometheus().running() as prometheus:
        prometheus.default = vector(0.0001)
        client, service, clock, token = build_api(tmp_path, prometheus)
        with client:
            yield Api(client, service, prometheus, clock, token, tmp_path)


def test_the_document_has_every_slo_and_the_canary(api: Api) -> None:
    response = api.client.get("/status.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    StatusDocument.model_validate(document)  # exactly the documented shape, no extra key
    assert document["status"] == "ok"
    catalog = load_catalog()
    assert [s["name"] for s in document["slos"]] == [s.name for s in catalog.slos]
    for slo in document["slos"]:
        assert slo["state"] == "ok", slo
        assert slo["error_budget_remaining"] > 0
        assert slo["burn_rate_1h"] < 14.4
    canary = document["canary"]
    assert canary["state"] == "ok"
    assert canary["rounds_24h"] == 100
    assert len(canary["buckets"]) == 24
    assert sum(b["rounds"] for b in canary["buckets"]) == 100
    assert canary["typical_spacing_seconds"] == pytest.approx(30)
    assert canary["p50_delay_seconds"] is not None
    # The queries asked are the catalog's, over the period and the last hour.
    assert sorted(api.prometheus.queries) == sorted(
        slo.query(window) for slo in catalog.slos for window in ("28d", "1h")
    )


def test_nothing_sensitive_is_shown(api: Api, tmp_path: Path) -> None:
    answers = [api.client.get(path).text for path in ("/status.json", "/status")]
    with FakePrometheus().running() as down:
        pass  # stopped: its port now refuses connections
    client, *_ = build_api(tmp_path / "down", down, url=down.url)
    with client:
        answers += [client.get(path).text for path in ("/status.json", "/status")]
    assert "metrics source unreachable" in answers[2]
    forbidden = [
        CANARY,
        PRIVATE_TOPIC,
        "salary",
        api.token,
        api.token.split("_")[1],  # the key id
        api.prometheus.url.split("//")[1],
        down.url.split("//")[1],
        "127.0.0.1",
        "localhost",
        *([socket.gethostname()] if len(socket.gethostname()) > 5 else []),
        str(tmp_path),
        "Traceback",
        "Exception",
        "sqlite",
        "latam_http",  # PromQL stays inside
    ]
    for text in answers:
        for word in forbidden:
            assert word not in text, word


def test_public_with_auth_on_even_with_a_bad_token(api: Api) -> None:
    assert api.client.get("/v1/topics").status_code == 401  # authentication is on
    for headers in ({}, {"Authorization": "Bearer lt_nope_nope"}):
        for path in ("/status", "/status.json"):
            assert api.client.get(path, headers=headers).status_code == 200, (path, headers)


def test_head_answers_like_get_without_a_body(api: Api) -> None:
    for path in ("/status", "/status.json"):
        got = api.client.get(path)
        head = api.client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["cache-control"] == "public, max-age=30"


def test_the_page_reloads_itself_only_when_asked(api: Api) -> None:
    plain = api.client.get("/status").text
    wall = api.client.get("/status?refresh=on").text
    assert 'http-equiv="refresh"' not in plain
    assert '<meta http-equiv="refresh" content="30">' in wall
    bad = api.client.get("/status?refresh=yes")
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


def test_computed_once_per_interval_and_cacheable(api: Api) -> None:
    first = api.client.get("/status.json")
    assert first.headers["cache-control"] == "public, max-age=30"
    assert first.headers["age"] == "0"
    asked = len(api.prometheus.queries)
    store_canary_rounds(api.service, 5, first=1000)
    api.clock[0] += 12.5
    for _ in range(20):
        again = api.client.get("/status.json")
        assert again.content == first.content
    page = api.client.get("/status")
    assert page.headers["cache-control"] == "public, max-age=30"
    assert page.headers["age"] == "12"  # shared caches keep it only for what is left
    assert len(api.prometheus.queries) == asked  # nothing asked again
    api.clock[0] += 20
    fresh = api.client.get("/status.json").json()
    assert fresh["generated_at"] != first.json()["generated_at"]
    assert fresh["canary"]["rounds_24h"] == 105
    assert len(api.prometheus.queries) == 2 * asked


def test_the_page_escapes_everything_and_allows_only_its_own_style(tmp_path: Path) -> None:
    hostile = Catalog(
        28,
        (
            Slo(
                "x<y",
                '<script>alert("t")</script>',
                0.99,
                'Tom & "Jerry" <img src=x onerror=alert(1)>',
                "bad[$window]",
            ),
        ),
    )
    with FakePrometheus().running() as prometheus:
        prometheus.default = vector(0.5)
        client, *_ = build_api(tmp_path, prometheus, catalog=hostile)
        with client:
            response = client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;" in html
    assert "Tom &amp; &quot;Jerry&quot; &lt;img src=x onerror=alert(1)&gt;" in html
    assert 'data-slo="x&lt;y"' in html
    assert 'data-state="exhausted"' in html
    assert "Budget exhausted" in html  # a word beside the colour
    assert 'href="status.json"' in html
    assert "http://" not in html  # nothing loaded from anywhere
    assert "https://" not in html
    # One Content-Security-Policy: no script at all, only the page's own inline style.
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1
    assert "default-src 'none'" in policies[0]
    assert "script-src" not in policies[0]
    hashes = re.findall(r"'sha256-([^']+)'", policies[0])
    assert len(hashes) == 1
    assert f"<style>{CSS}</style>" in html
    assert response.headers.get_list("cache-control") == ["public, max-age=30"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_routes_are_labelled_as_themselves_in_metrics(api: Api) -> None:
    api.client.get("/status")
    api.client.get("/status.json")
    body, _ = metrics.exposition()
    text = body.decode()
    for route in ("/status", "/status.json"):
        assert re.search(rf'latam_http_requests_total{{[^}}]*route="{re.escape(route)}"', text)


def test_the_openapi_document_describes_the_status(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/status" in paths
    ok = paths["/status.json"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StatusDocument"
    }
    assert "security" not in paths["/status.json"]["get"]


def test_an_unreadable_catalog_leaves_the_api_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Catalog:
        raise ValueError("the SLO catalog is malformed")

    monkeypatch.setattr(status_routes, "load_catalog", broken)
    settings = Settings(data_dir=tmp_path)
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    with TestClient(create_app(service, settings, build_keys(settings, service.store))) as client:
        document = client.get("/status.json").json()
        page = client.get("/status")
    assert (document["slos"], document["status"]) == ([], "unknown")
    assert page.status_code == 200
    assert "No service level objective can be shown." in page.text
    assert "the SLO catalog cannot be read" in caplog.text


@pytest.mark.parametrize("kind", STORES)
def test_the_canary_history_reads_alike_on_every_store(kind: str, tmp_path: Path) -> None:
    with temporary_database(kind, tmp_path) as url:
        service = build_service(Settings(data_dir=tmp_path, database_url=url))
        migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
        try:
            topic_id = service.create_topic(name=CANARY).id
            now = utcnow()
            published = [now - timedelta(seconds=5 + 30 * i, microseconds=i) for i in range(180)]
            service.store.write_messages(
                [
                    (topic_id, NewMessage(CANARY, f"c{i}", "{}", {}, at, topic_id=topic_id))
                    for i, at in enumerate(published)
                ]
            )
            found = read_canary(service, CANARY, now=now)
        finally:
            service.store.close()
    assert found.state == "ok", found.reason
    assert found.rounds_24h == 180
    assert found.last_round_at == published[0]
    assert found.typical_spacing_seconds == pytest.approx(30, abs=0.01)
    assert all(b.start.tzinfo is not None and b.start.minute == 0 for b in found.buckets)
    assert sum(1 for b in found.buckets if b.rounds) in (2, 3)
    assert found.p50_delay_seconds is not None
    assert found.p50_delay_seconds >= 0
