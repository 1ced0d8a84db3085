"""``GET /v1/topics/{id}/aggregate`` through the real FastAPI app on each SQL store: the
answer, the 400/404 problems naming the parameter, the 422 statement timeout and the 429
query budget per key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.domain import NewMessage
from latam.keys import create_key
from latam.service import Service
from latam.settings import Settings
from latam.storage import migrate
from tests.databases import STORES, temporary_database

PROBLEM = "application/problem+json"
START = datetime(2026, 1, 1, 10, tzinfo=UTC)
FLIGHTS = [
    {"origin": "SCL", "delay_min": 5},
    {"origin": "SCL", "delay_min": 10},
    {"origin": "SCL", "delay_min": "12"},
    {"origin": "Bogotá", "delay_min": 7.5},
    {"origin": 1, "delay_min": 1},
    {"delay_min": 3},
]


@contextmanager
def api(kind: str, tmp_path: Path, **overrides: Any) -> Iterator[tuple[TestClient, Service]]:
    """The app of ``create_app`` on a fresh database of ``kind``."""
    with temporary_database(kind, tmp_path) as url:
        settings = Settings(data_dir=tmp_path, database_url=url, **overrides)
        service = build_service(settings)
        migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
        app = create_app(service, settings, build_keys(settings, service.store))
        try:
            with TestClient(app) as client:
                yield client, service
        finally:
            service.store.close()


def new_topic(client: TestClient, service: Service, rows: list[dict[str, Any]], **kw: Any) -> int:
    """A topic holding ``rows`` (a minute apart from START), stored as the worker would."""
    created = client.post("/v1/topics", json={"name": f"t{len(rows)}"}, **kw)
    topic_id = int(created.json()["id"])
    messages = [
        (
            topic_id,
            NewMessage(
                topic=f"t{len(rows)}",
                message_id=str(n),
                data=orjson.dumps(data).decode(),
                published_at=START + timedelta(minutes=n % 120),
            ),
        )
        for n, data in enumerate(rows)
    ]
    for first in range(0, len(messages), 1000):
        service.store.write_messages(messages[first : first + 1000])
    return topic_id


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(slug)
    assert {"title", "status", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize("kind", STORES)
def test_an_aggregation_per_hour_and_origin(kind: str, tmp_path: Path) -> None:
    with api(kind, tmp_path) as (client, service):
        topic = new_topic(client, service, FLIGHTS)
        params = {
            "bucket": "hour",
            "group_by": "data.origin",
            "metrics": "count,avg:data.delay_min,p95:data.delay_min,max:data.delay_min",
            "data.delay_min": "gte.2",
            "since": "2026-01-01T10:00:00Z",
            "until": "2026-01-01T11:00:00",  # no offset: UTC
        }
        response = client.get(f"/v1/topics/{topic}/aggregate", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["server-timing"].startswith("db;dur=")
    hour = "2026-01-01T10:00:00Z"
    metrics = ("avg:data.delay_min", "p95:data.delay_min", "max:data.delay_min")
    assert response.json() == {
        "data": [
            {"bucket": hour, "group": {"data.origin": "Bogotá"}, "count": 1}
            | dict(zip(metrics, (7.5, 7.5, 7.5), strict=True)),
            {"bucket": hour, "group": {"data.origin": "SCL"}, "count": 2}
            | dict(zip(metrics, (7.5, 9.75, 10), strict=True)),
            {"bucket": hour, "group": {"data.origin": None}, "count": 1}
            | dict(zip(metrics, (3.0, 3.0, 3), strict=True)),
        ],
        "scanned": True,
    }


BAD = [
    ({"metrics": "median:data.x"}, "metrics"),
    ({"metrics": "avg"}, "metrics"),
    ({"metrics": "count,count"}, "metrics"),
    ({"metrics": "avg:data..x"}, "metrics"),
    ({"metrics": ",".join(f"max:data.f{n}" for n in range(11))}, "metrics"),
    ({"group_by": "data.a,data.b,data.c,data.d"}, "group_by"),
    ({"group_by": "origin"}, "group_by"),
    ({"bucket": "week"}, "bucket"),
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    (
        {"bucket": "minute", "since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
        "bucket",
    ),
    ({"data.delay_min": "like.5"}, "data.delay_min"),
    ({"colour": "red"}, "colour"),
    ([("metrics", "count"), ("metrics", "max:data.x")], "metrics"),
]


def test_bad_input_is_a_400_naming_the_parameter(tmp_path: Path) -> None:
    with api("sqlite", tmp_path) as (client, service):
        topic = new_topic(client, service, FLIGHTS)
        for params, field in BAD:
            response = client.get(f"/v1/topics/{topic}/aggregate", params=params)
            body = problem(response, 400, "invalid-query")
            assert [e["field"] for e in body["errors"]] == [field], params
        missing = client.get("/v1/topics/999/aggregate")
        problem(missing, 404, "not-found")


@pytest.mark.parametrize("kind", STORES)
def test_more_than_1000_groups_is_a_400(kind: str, tmp_path: Path) -> None:
    with api(kind, tmp_path) as (client, service):
        topic = new_topic(client, service, [{"k": n} for n in range(1001)])
        path = f"/v1/topics/{topic}/aggregate"
        body = problem(client.get(path, params={"group_by": "data.k"}), 400, "invalid-query")
        assert body["errors"][0]["field"] == "group_by"
        assert "narrow" in body["detail"]
        kept = client.get(path, params={"group_by": "data.k", "data.k": "lt.1000"})
        assert len(kept.json()["data"]) == 1000
        # Per minute as well: still a row per message.
        over = client.get(path, params={"bucket": "minute", "group_by": "data.k"})
        assert problem(over, 400, "invalid-query")["errors"][0]["field"] == "group_by"


@pytest.mark.parametrize("kind", STORES)
def test_a_query_past_the_timeout_is_a_422(kind: str, tmp_path: Path) -> None:
    """A tiny LATAM_QUERY_TIMEOUT_SECONDS and 30,000 messages: the database stops the
    statement; the next cheap query on the same pool still works."""
    with api(kind, tmp_path, query_timeout_seconds=0.001) as (client, service):
        rows = [{"k": n % 997, "v": n, "s": f"s{n}"} for n in range(30_000)]
        topic = new_topic(client, service, rows)
        params = {
            "group_by": "data.k",
            "metrics": "p50:data.v,p95:data.v,p99:data.v,count_distinct:data.s,avg:data.v",
        }
        response = client.get(f"/v1/topics/{topic}/aggregate", params=params)
        body = problem(response, 422, "query-timeout")
        assert "LATAM_QUERY_TIMEOUT_SECONDS" in body["detail"]
        assert client.get(f"/v1/topics/{topic}").status_code == 200


def test_the_query_budget_is_per_key(tmp_path: Path) -> None:
    """Each aggregation holds a second of its key's budget while it runs and is charged
    the time it ran: with a budget of one second, refilled at 0.01 s a second, a second
    aggregation within a minute is a 429 with Retry-After; another key has its own."""
    overrides = {"auth": "on", "query_cost_per_second": 0.01, "query_cost_burst_seconds": 1}
    with api("sqlite", tmp_path, **overrides) as (client, service):
        keys = client.app.state.keys  # type: ignore[attr-defined]
        headers = {}
        for name in ("admin", "a", "b"):
            _, token = create_key(keys.store, name=name, scopes=["admin", "read"])
            headers[name] = {"Authorization": f"Bearer {token}"}
        topic = new_topic(client, service, FLIGHTS, headers=headers["admin"])
        path = f"/v1/topics/{topic}/aggregate"
        assert client.get(path, headers=headers["a"]).status_code == 200
        refused = client.get(path, headers=headers["a"])
        problem(refused, 429, "too-many-requests")
        assert int(refused.headers["retry-after"]) >= 1
        assert client.get(path, headers=headers["b"]).status_code == 200
        # Reads are not charged to the query budget.
        assert client.get(f"/v1/topics/{topic}/messages", headers=headers["a"]).status_code == 200
