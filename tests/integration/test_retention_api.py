"""Retention through a real ``latam serve``: set over HTTP and the CLI, bad values refused,
and the workers deleting what a producer published too long ago, counted in metrics."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx

from latam.domain import isoformat, utcnow
from tests.contract.brokers import SqliteHarness
from tests.support import create_topic, read_all, running_serve, unique, wait_for_count


def test_retention_set_refused_and_applied(tmp_path: Path) -> None:
    with (
        running_serve(tmp_path, retention_interval_seconds=0.5) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        created = client.post("/v1/topics", json={"name": unique("r-"), "retention_seconds": 86400})
        assert created.status_code == 201, created.text
        assert created.json()["retention_seconds"] == 86400
        name = unique("ops-")
        topic_id = create_topic(client, name)
        url = f"/v1/topics/{topic_id}"
        assert client.get(url).json()["retention_seconds"] is None
        for body in (
            {},
            {"retention_seconds": 5},
            {"retention_seconds": "a day"},
            {"retention_seconds": 10**12},
            {"name": None},
            {"retention": 60},
        ):
            response = client.put(url, json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        assert client.get(url).json()["retention_seconds"] is None
        # Renaming alone keeps the retention; null keeps messages forever again.
        assert client.put(url, json={"retention_seconds": 3600}).json()["retention_seconds"] == 3600
        renamed = client.put(url, json={"name": name + "-2"}).json()
        assert (renamed["name"], renamed["retention_seconds"]) == (name + "-2", 3600)
        assert client.put(url, json={"name": name}).status_code == 200

        producer = SqliteHarness(tmp_path / "broker.db")
        old = isoformat(utcnow() - timedelta(hours=2))
        for i in range(30):
            producer.publish_raw(
                b'{"i": %d}' % i, {"topic": name, "message_id": f"old-{i}", "published_at": old}
            )
        published = client.post(url + "/messages", json={"id": "new", "data": {"fresh": True}})
        assert published.status_code == 202
        deadline = time.monotonic() + 30
        ids: list[str] = []
        while time.monotonic() < deadline:
            ids = [m["id"] for m in read_all(client, topic_id)]
            stats = client.get(url + "/stats", params={"bucket": "day"}).json()
            if ids == ["new"] and stats["total"]["count"] == 1:
                break
            time.sleep(0.3)
        assert ids == ["new"]
        assert stats["total"]["count"] == 1
        metrics = client.get("/metrics").text
        line = f'latam_retention_deleted_total{{topic="{name}"}} 30.0'
        assert line in metrics
        # Null: nothing is deleted any more.
        assert client.put(url, json={"retention_seconds": None}).json()["retention_seconds"] is None
        producer.publish_raw(b"{}", {"topic": name, "message_id": "old-again", "published_at": old})
        wait_for_count(client, topic_id, 2)
        time.sleep(1.5)
        assert sorted(m["id"] for m in read_all(client, topic_id)) == ["new", "old-again"]
