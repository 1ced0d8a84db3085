"""Data contracts through a real ``latam serve``: versions, 422 with pointers at the door,
compatibility refusals, and bad input of every kind answered without changing anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import create_topic, read_all, wait_for_count

PROBLEM = "application/problem+json"
FLIGHTS: dict[str, Any] = {
    "type": "object",
    "required": ["flight", "origin", "destination", "delay_min", "status"],
    "properties": {
        "flight": {"type": "string", "pattern": "^[A-Z0-9]{2}[0-9]{1,4}$"},
        "origin": {"type": "string", "minLength": 3, "maxLength": 3},
        "destination": {"type": "string", "minLength": 3, "maxLength": 3},
        "delay_min": {"type": "integer", "minimum": 0},
        "status": {"enum": ["ON_TIME", "DELAYED", "CANCELLED"]},
        "a/b~c": {"type": "string"},
    },
}


def flight(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "flight": f"LA{800 + n}",
        "origin": "SCL",
        "destination": "LIM",
        "delay_min": n,
        "status": "DELAYED" if n else "ON_TIME",
        **changes,
    }


@pytest.fixture(scope="module")
def client(live_server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server_url, timeout=30) as http:
        yield http


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


def put_schema(
    client: httpx.Client, topic_id: int, schema: object, compatibility: str = "backward"
) -> httpx.Response:
    return client.put(
        f"/v1/topics/{topic_id}/schema", json={"schema": schema, "compatibility": compatibility}
    )


def test_versions_are_kept_and_read_back(client: httpx.Client) -> None:
    topic_id = create_topic(client)
    assert problem(client.get(f"/v1/topics/{topic_id}/schema"), 404)
    first = put_schema(client, topic_id, FLIGHTS)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["version"] == 1
    assert body["schema"] == FLIGHTS
    assert body["compatibility"] == "backward"
    assert body["current"] is True
    assert body["created_at"].endswith("Z")
    # The same schema again changes nothing.
    assert put_schema(client, topic_id, FLIGHTS).json()["version"] == 1
    looser = {**FLIGHTS, "required": ["flight"]}
    assert put_schema(client, topic_id, looser).json()["version"] == 2
    current = client.get(f"/v1/topics/{topic_id}/schema").json()
    assert (current["version"], current["schema"]) == (2, looser)
    versions = client.get(f"/v1/topics/{topic_id}/schema/versions").json()["data"]
    assert [(v["version"], v["current"]) for v in versions] == [(1, False), (2, True)]
    assert client.get(f"/v1/topics/{topic_id}/schema/versions/1").json()["schema"] == FLIGHTS
    assert problem(client.get(f"/v1/topics/{topic_id}/schema/versions/3"), 404)
    assert client.delete(f"/v1/topics/{topic_id}/schema").status_code == 204
    assert problem(client.get(f"/v1/topics/{topic_id}/schema"), 404)
    # The versions stay; a new one continues the numbering.
    assert len(client.get(f"/v1/topics/{topic_id}/schema/versions").json()["data"]) == 2
    assert put_schema(client, topic_id, FLIGHTS, "none").json()["version"] == 3


def test_missing_topic_is_404_everywhere(client: httpx.Client) -> None:
    missing = 2**62
    for response in (
        put_schema(client, missing, FLIGHTS),
        client.get(f"/v1/topics/{missing}/schema"),
        client.get(f"/v1/topics/{missing}/schema/versions"),
        client.get(f"/v1/topics/{missing}/schema/versions/1"),
        client.delete(f"/v1/topics/{missing}/schema"),
    ):
        assert "does not exist" in problem(response, 404)["detail"]


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "objekt"}, "not valid JSON Schema 2020-12"),
        ({"properties": {"a": {"minimum": "zero"}}}, "not valid JSON Schema 2020-12"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "only JSON Schema draft 2020-12"),
        ({"$ref": "http://169.254.169.254/latest/meta-data"}, "Retrieval is disabled"),
        ({"properties": {"a": {"pattern": "(?<=x)y"}}}, "not valid JSON Schema 2020-12"),
        ({"description": "x" * 70_000}, "larger than"),
    ],
)
def test_invalid_schema_is_422_and_changes_nothing(
    client: httpx.Client, schema: object, words: str
) -> None:
    topic_id = create_topic(client)
    body = problem(put_schema(client, topic_id, schema), 422)
    assert words in body["detail"]
    assert problem(client.get(f"/v1/topics/{topic_id}/schema"), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"schema": FLIGHTS, "compatibility": "forward"},
        {"schema": [1, 2]},
        {"schema": "text"},
        {"compatibility": "none"},
        {"schema": FLIGHTS, "extra": 1},
    ],
)
def test_malformed_request_is_422(client: httpx.Client, body: dict[str, Any]) -> None:
    topic_id = create_topic(client)
    problem(client.put(f"/v1/topics/{topic_id}/schema", json=body), 422)


def test_backward_incompatible_version_is_refused_with_reasons(client: httpx.Client) -> None:
    topic_id = create_topic(client)
    assert put_schema(client, topic_id, FLIGHTS).status_code == 200
    stricter = {
        **FLIGHTS,
        "required": [*FLIGHTS["required"], "gate"],
        "properties": {
            **FLIGHTS["properties"],
            "delay_min": {"type": "integer", "minimum": 0, "maximum": 600},
            "status": {"enum": ["ON_TIME", "DELAYED"]},
            "origin": {"type": "integer"},
        },
    }
    body = problem(put_schema(client, topic_id, stricter), 409)
    reasons = " | ".join(e["message"] for e in body["errors"])
    assert "new required field(s) gate" in reasons
    assert "/delay_min: maximum 600 is added" in reasons
    assert '/status: enum no longer allows "CANCELLED"' in reasons
    assert "/origin: type no longer allows string" in reasons
    assert client.get(f"/v1/topics/{topic_id}/schema").json()["version"] == 1
    # ``none`` takes it as it is.
    assert put_schema(client, topic_id, stricter, "none").json()["version"] == 2


def test_invalid_data_is_422_with_pointers_and_nothing_is_published(
    client: httpx.Client,
) -> None:
    topic_id = create_topic(client)
    assert put_schema(client, topic_id, FLIGHTS).status_code == 200
    batch = [flight(n) for n in range(5)]
    batch[3] = flight(3, delay_min="12")
    batch[4] = {k: v for k, v in flight(4, **{"a/b~c": 1}).items() if k != "origin"}
    messages = [{"id": f"m{n}", "data": data} for n, data in enumerate(batch)]
    body = problem(client.post(f"/v1/topics/{topic_id}/messages", json={"messages": messages}), 422)
    assert body["schema_version"] == 1
    assert "2 of 5 message(s) fail" in body["detail"]
    found = {(e["pointer"], e["message"]) for e in body["errors"]}
    assert ("/messages/3/data/delay_min", '"12" is not of type "integer"') in found
    assert ("/messages/4/data", '"origin" is a required property') in found
    assert ("/messages/4/data/a~1b~0c", '1 is not of type "string"') in found
    # One message: pointers into that body.
    one = client.post(f"/v1/topics/{topic_id}/messages", json={"data": flight(1, status="LATE")})
    assert [e["pointer"] for e in problem(one, 422)["errors"]] == ["/data/status"]
    # All or nothing: the valid messages of the refused batch were not published.
    ok = client.post(
        f"/v1/topics/{topic_id}/messages",
        json={"messages": [{"id": "good", "data": flight(7)}]},
    )
    assert ok.status_code == 202, ok.text
    stored = wait_for_count(client, topic_id, 1)
    assert [m["id"] for m in stored] == ["good"]
    assert stored[0]["schema_version"] == 1


def test_dropping_the_schema_stops_enforcing_and_keeps_data_readable(
    client: httpx.Client,
) -> None:
    topic_id = create_topic(client)
    assert put_schema(client, topic_id, FLIGHTS).status_code == 200
    url = f"/v1/topics/{topic_id}/messages"
    assert client.post(url, json={"id": "a", "data": flight(1)}).status_code == 202
    assert client.delete(f"/v1/topics/{topic_id}/schema").status_code == 204
    assert client.post(url, json={"id": "b", "data": {"free": "form"}}).status_code == 202
    # A stricter schema later never makes stored data unreadable.
    strict = {"type": "object", "required": ["never"]}
    assert put_schema(client, topic_id, strict, "none").status_code == 200
    wait_for_count(client, topic_id, 2)
    by_id = {m["id"]: m for m in read_all(client, topic_id)}
    assert by_id["a"]["schema_version"] == 1
    assert by_id["b"]["schema_version"] is None
    assert by_id["b"]["data"] == {"free": "form"}


def test_many_failures_are_bounded(client: httpx.Client) -> None:
    topic_id = create_topic(client)
    assert put_schema(client, topic_id, FLIGHTS).status_code == 200
    messages = [{"data": {"flight": n}} for n in range(1000)]
    body = problem(client.post(f"/v1/topics/{topic_id}/messages", json={"messages": messages}), 422)
    assert "1000 of 1000 message(s) fail" in body["detail"]
    assert "the first 100 errors are listed" in body["detail"]
    assert len(body["errors"]) == 100
    assert all(len(e["message"]) <= 300 for e in body["errors"])
