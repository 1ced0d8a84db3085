"""The API's contract for bad input and sick dependencies, on real SQLite adapters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.domain import encode_cursor
from latam.settings import Settings
from latam.storage import migrate

PROBLEM = "application/problem+json"


def make_client(tmp_path: Path, **overrides: object) -> TestClient:
    settings = Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    service = build_service(settings)
    if settings.effective_database_url.startswith("sqlite"):
        migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    app = create_app(service, settings, build_keys(settings, service.store))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, max_body_bytes=64 * 1024, max_message_bytes=1024) as made:
        yield made


@pytest.fixture
def topic_id(client: TestClient) -> int:
    return int(client.post("/v1/topics", json={"name": "flights"}).json()["id"])


def assert_problem(response: object, status: int, *fields: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == PROBLEM  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    named = {e["field"] for e in body.get("errors", [])}  # type: ignore[attr-defined]
    for field in fields:
        assert any(field in name for name in named), (field, named)
    return body


def test_invalid_json_is_422(client: TestClient, topic_id: int) -> None:
    response = client.post(
        f"/v1/topics/{topic_id}/messages",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 422, "body")


def test_fields_are_named(client: TestClient, topic_id: int) -> None:
    assert_problem(client.post(f"/v1/topics/{topic_id}/messages", json={}), 422, "data")
    response = client.post(f"/v1/topics/{topic_id}/messages", json={"data": [1, 2]})
    assert_problem(response, 422, "data")
    response = client.post(f"/v1/topics/{topic_id}/messages", json={"data": {}, "extra": 1})
    assert_problem(response, 422, "extra")
    response = client.post(
        f"/v1/topics/{topic_id}/messages", json={"messages": [{"data": {}}, {"data": 3}]}
    )
    assert_problem(response, 422, "messages.1.data")
    assert_problem(client.post("/v1/topics", json={"name": ""}), 422, "name")
    assert_problem(client.post("/v1/topics", json={"name": "x" * 201}), 422, "name")


def test_batch_bounds(client: TestClient, topic_id: int) -> None:
    path = f"/v1/topics/{topic_id}/messages"
    assert_problem(client.post(path, json={"messages": []}), 422, "messages")
    nested = {"messages": [{"messages": []}]}
    assert_problem(client.post(path, json=nested), 422, "messages.0")


def test_more_than_1000_messages_is_422(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        tid = client.post("/v1/topics", json={"name": "a"}).json()["id"]
        response = client.post(
            f"/v1/topics/{tid}/messages", json={"messages": [{"data": {}}] * 1001}
        )
        assert_problem(response, 422, "messages")


def test_oversized_message_and_reserved_attributes_are_422(
    client: TestClient, topic_id: int
) -> None:
    path = f"/v1/topics/{topic_id}/messages"
    body = assert_problem(client.post(path, json={"data": {"x": "y" * 2000}}), 422)
    assert "1024" in str(body["detail"])
    assert_problem(client.post(path, json={"data": {}, "attributes": {"topic": "x"}}), 422)
    assert_problem(client.post(path, json={"data": {}, "attributes": {"k": 1}}), 422, "k")


def test_body_over_the_limit_is_413(client: TestClient, topic_id: int) -> None:
    big = b'{"data": {"x": "' + b"y" * 70_000 + b'"}}'
    response = client.post(
        f"/v1/topics/{topic_id}/messages",
        content=big,
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413)


def test_wrong_content_type_is_415(client: TestClient, topic_id: int) -> None:
    response = client.post(
        f"/v1/topics/{topic_id}/messages",
        content=b'{"data": {}}',
        headers={"content-type": "text/plain"},
    )
    assert_problem(response, 415)
    assert_problem(client.post("/v1/topics", data={"name": "x"}), 415)


def test_unknown_topic_is_404_and_duplicate_is_409(client: TestClient, topic_id: int) -> None:
    assert_problem(client.post("/v1/topics/999/messages", json={"data": {}}), 404)
    assert_problem(client.get("/v1/topics/999/messages"), 404)
    assert_problem(client.get("/v1/topics/999"), 404)
    assert_problem(client.delete("/v1/topics/999"), 404)
    assert_problem(client.post("/v1/topics", json={"name": "flights"}), 409)
    assert_problem(client.post("/api/data", json={"nombre": "flights"}), 409)
    assert_problem(client.get("/v1/topics/abc"), 422, "topic_id")


def test_cursors_are_checked(client: TestClient, topic_id: int) -> None:
    path = f"/v1/topics/{topic_id}/messages"
    assert_problem(client.get(path, params={"cursor": "garbage!!"}), 422, "cursor")
    foreign = encode_cursor(topic_id + 1, 5)
    assert_problem(client.get(path, params={"cursor": foreign}), 422, "cursor")
    assert client.get(path, params={"cursor": encode_cursor(topic_id, 0)}).status_code == 200


def test_query_bounds(client: TestClient, topic_id: int) -> None:
    path = f"/v1/topics/{topic_id}/messages"
    assert_problem(client.get(path, params={"limit": 0}), 422, "limit")
    assert_problem(client.get(path, params={"limit": 1001}), 422, "limit")
    assert_problem(client.get(path, params={"since": "yesterday"}), 422, "since")
    inverted = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    assert_problem(client.get(path, params=inverted), 422, "since")


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/nope"), 404)
    assert_problem(client.patch("/v1/topics"), 405)


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.json() == {"status": "ready", "checks": {"store": True, "broker": True}}
    spec = client.get("/openapi.json").json()
    assert "/v1/topics/{topic_id}/messages" in spec["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/", headers={"x-request-id": "abc"}).headers["x-request-id"] == "abc"


def test_store_down_is_503_with_retry_after(tmp_path: Path) -> None:
    with make_client(tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/x") as c:
        body = assert_problem(c.get("/v1/topics"), 503)
        assert "psycopg" not in str(body)
        assert "127.0.0.1" not in str(body)
        assert c.get("/v1/topics").headers["retry-after"].isdigit()
        ready = c.get("/readyz")
        assert_problem(ready, 503)
        assert ready.json()["checks"] == {"store": False, "broker": True}


def test_broker_down_is_503_and_nothing_half_accepted(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the broker directory should be")
    with make_client(tmp_path, broker_url=f"sqlite:///{blocked}/broker.db") as c:
        tid = c.post("/v1/topics", json={"name": "a"}).json()["id"]
        response = c.post(f"/v1/topics/{tid}/messages", json={"data": {"k": 1}})
        assert_problem(response, 503)
        assert response.headers["retry-after"].isdigit()
        assert c.get("/readyz").json()["checks"] == {"store": True, "broker": False}
