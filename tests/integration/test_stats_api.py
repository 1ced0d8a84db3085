"""The stats endpoints through a real ``latam serve``: shapes, validation and errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.support import create_topic, wait_for_count

PROBLEM = "application/problem+json"
DATA = [{"n": 1}, {"ciudad": "São Paulo"}, {"list": [1, 2, 3]}]


@pytest.fixture(scope="module")
def client(live_server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def topic_id(client: httpx.Client) -> int:
    topic = create_topic(client)
    batch = {"messages": [{"data": data} for data in DATA]}
    assert client.post(f"/v1/topics/{topic}/messages", json=batch).status_code == 202
    assert len(wait_for_count(client, topic, len(DATA))) == len(DATA)
    return topic


def stored_bytes() -> int:
    return sum(len(orjson.dumps(data)) for data in DATA)


def problem_fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    return {error["field"] for error in body.get("errors", [])}


@pytest.mark.parametrize("bucket", ["minute", "hour", "day"])
def test_topic_stats_shape(client: httpx.Client, topic_id: int, bucket: str) -> None:
    response = client.get(f"/v1/topics/{topic_id}/stats", params={"bucket": bucket})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == {"count": len(DATA), "bytes": stored_bytes()}
    assert sum(b["count"] for b in body["buckets"]) == len(DATA)
    for item in body["buckets"]:
        assert set(item) == {"start", "count", "bytes"}
        assert item["start"].endswith("Z")
        start = datetime.fromisoformat(item["start"])
        assert (start.second, start.microsecond) == (0, 0)
        assert bucket != "day" or (start.hour, start.minute) == (0, 0)


def test_window_outside_the_data_is_empty(client: httpx.Client, topic_id: int) -> None:
    params = {"bucket": "day", "since": "2001-01-01T00:00:00Z", "until": "2001-01-02T00:00:00Z"}
    response = client.get(f"/v1/topics/{topic_id}/stats", params=params)
    assert response.json() == {"buckets": [], "total": {"count": 0, "bytes": 0}}


def test_unknown_bucket_is_422(client: httpx.Client, topic_id: int) -> None:
    response = client.get(f"/v1/topics/{topic_id}/stats", params={"bucket": "week"})
    assert response.status_code == 422
    assert problem_fields(response) == {"query.bucket"}


def test_since_after_until_is_422(client: httpx.Client, topic_id: int) -> None:
    params = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    response = client.get(f"/v1/topics/{topic_id}/stats", params=params)
    assert response.status_code == 422
    assert problem_fields(response) == {"since"}


def test_too_many_buckets_is_422(client: httpx.Client, topic_id: int) -> None:
    params = {"bucket": "minute", "since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}
    response = client.get(f"/v1/topics/{topic_id}/stats", params=params)
    assert response.status_code == 422
    assert problem_fields(response) == {"bucket"}
    assert "larger bucket" in response.json()["detail"]


def test_unknown_topic_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/topics/987654321/stats")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


def test_totals_per_topic(client: httpx.Client, topic_id: int) -> None:
    response = client.get("/v1/stats")
    assert response.status_code == 200, response.text
    mine = [row for row in response.json()["data"] if row["topic_id"] == topic_id]
    assert len(mine) == 1
    row = mine[0]
    assert (row["count"], row["bytes"]) == (len(DATA), stored_bytes())
    assert row["first_published_at"].endswith("Z")
    assert row["first_published_at"] <= row["last_published_at"]


def test_a_bounded_range_answers_as_an_open_one(client: httpx.Client, topic_id: int) -> None:
    """A dashboard's range (since and until, ragged to the microsecond) is read on the
    event loop by the store's own reader; the whole history in the store's thread: the
    same buckets either way."""
    path = f"/v1/topics/{topic_id}/stats"
    for bucket in ("minute", "hour", "day"):
        whole = client.get(path, params={"bucket": bucket})
        assert whole.status_code == 200, whole.text
        first = whole.json()["buckets"][0]["start"]
        since = datetime.fromisoformat(first) - timedelta(microseconds=1)
        until = datetime.now(UTC) + timedelta(minutes=1, microseconds=123)
        params = {"bucket": bucket, "since": since.isoformat(), "until": until.isoformat()}
        bounded = client.get(path, params=params)
        assert bounded.status_code == 200, bounded.text
        assert bounded.content == whole.content


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000001Z"),
        ("9999-12-31T23:59:59.999998Z", "9999-12-31T23:59:59.999999Z"),
        ("2026-01-01T00:00:00+14:00", "2026-01-01T00:00:00-12:00"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ],
)
def test_edge_ranges_are_empty_not_errors(
    client: httpx.Client, topic_id: int, since: str, until: str
) -> None:
    params = {"bucket": "minute", "since": since, "until": until}
    response = client.get(f"/v1/topics/{topic_id}/stats", params=params)
    assert response.status_code == 200, response.text
    assert response.json() == {"buckets": [], "total": {"count": 0, "bytes": 0}}


def test_unknown_topic_with_a_range_is_404(client: httpx.Client) -> None:
    params = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
    response = client.get("/v1/topics/987654321/stats", params=params)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


def test_openapi_documents_the_responses(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    route = spec["paths"]["/v1/topics/{topic_id}/stats"]["get"]
    schema = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/TopicStats"}
    assert "/v1/stats" in spec["paths"]


@pytest.fixture
def each_call_connects(live_server_url: str) -> Iterator[httpx.Client]:
    """A connection per request: the kernel spreads them over the API processes."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=live_server_url, timeout=30, limits=limits) as http:
        yield http


def test_every_answer_follows_each_change_at_once(each_call_connects: httpx.Client) -> None:
    """Stats answers are kept between calls (per API process), yet each call right after
    a change sees it: new rows, a rename and a deletion; asked often enough to reach
    every API process, each with an answer kept from before the change."""
    client = each_call_connects
    topic = create_topic(client)

    def answers() -> list[tuple[int, dict[str, Any] | None]]:
        found = []
        for _ in range(8):
            stats = client.get(f"/v1/topics/{topic}/stats", params={"bucket": "day"})
            everything = client.get("/v1/stats").json()["data"]
            mine = [row for row in everything if row["topic_id"] == topic]
            if stats.status_code == 404:
                found.append((-1, mine[0] if mine else None))
            else:
                found.append((stats.json()["total"]["count"], mine[0] if mine else None))
        return found

    def publish(count: int) -> None:
        batch = {"messages": [{"data": {"i": i}} for i in range(count)]}
        assert client.post(f"/v1/topics/{topic}/messages", json=batch).status_code == 202

    publish(3)
    assert len(wait_for_count(client, topic, 3)) == 3
    assert {(n, row and (row["count"], row["topic"])) for n, row in answers()} == {
        (3, (3, f"{topic_name(client, topic)}"))
    }
    publish(2)
    assert len(wait_for_count(client, topic, 5)) == 5  # stored: the stats say so at once
    assert {(n, row and row["count"]) for n, row in answers()} == {(5, 5)}
    renamed = f"renamed-{topic}"
    assert client.put(f"/v1/topics/{topic}", json={"name": renamed}).status_code == 200
    assert {(n, row and row["topic"]) for n, row in answers()} == {(5, renamed)}
    assert client.delete(f"/v1/topics/{topic}").status_code == 204
    assert set(answers()) == {(-1, None)}


def topic_name(client: httpx.Client, topic: int) -> str:
    name: str = client.get(f"/v1/topics/{topic}").json()["name"]
    return name
