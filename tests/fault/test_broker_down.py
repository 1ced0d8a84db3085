"""Broker down: publishes get 503 with Retry-After, every accepted message is stored once,
and latam recovers by itself when the broker returns (a private nats-server, never the
shared one). A refused publish is retried by its producer with the same ids."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.test_broker_faults import private_nats
from tests.support import create_topic, running_serve, wait_stored

OUTAGE_SECONDS = 8


class Producer:
    """Publishes numbered batches and remembers what each answer was."""

    def __init__(self, client: httpx.Client, topic_id: int) -> None:
        self.client, self.topic_id = client, topic_id
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.statuses: dict[int, int] = {}
        self.retry_after: set[str] = set()
        self.n = 0

    def publish(self) -> None:
        batch = [{"id": f"b-{self.n}-{i}", "data": {"n": self.n}} for i in range(10)]
        self.n += 1
        response = self.client.post(
            f"/v1/topics/{self.topic_id}/messages", json={"messages": batch}
        )
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if response.status_code == 202:
            self.accepted.extend(m["id"] for m in batch)
        else:
            assert response.status_code == 503, response.text
            self.refused.extend(m["id"] for m in batch)
            assert response.headers["content-type"] == "application/problem+json"
            self.retry_after.add(response.headers.get("retry-after", ""))


def test_broker_down_refuses_with_503_and_recovers(tmp_path: Path) -> None:
    with (
        private_nats(tmp_path / "nats") as server,
        running_serve(tmp_path, broker_url=server.url) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        producer = Producer(client, create_topic(client))
        for _ in range(20):
            producer.publish()
        server.kill()
        started = time.monotonic()
        while time.monotonic() - started < OUTAGE_SECONDS:
            producer.publish()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False
        refused = producer.statuses.get(503, 0)
        server.start()
        deadline = time.monotonic() + 60
        before = len(producer.accepted)
        while len(producer.accepted) < before + 200 and time.monotonic() < deadline:
            producer.publish()
        stored = wait_stored(client, producer.topic_id, set(producer.accepted), 120)
        print(
            f"broker-down: accepted={len(producer.accepted)} stored={len(stored)} "
            f"duplicated={len(stored) - len(set(stored))} "
            f"lost={len(set(producer.accepted) - set(stored))} refused_batches={refused}"
        )
        assert refused > 0, "publishes were not refused while the broker was down"
        assert producer.retry_after
        assert all(v.isdigit() for v in producer.retry_after)
        assert len(producer.accepted) >= before + 200, "publishing did not recover"
        assert len(stored) == len(set(stored))
        assert set(producer.accepted) <= set(stored), "an accepted message was lost"
        # A 503 is an unknown outcome (the broker may have kept the message before it
        # died); a producer retries with the same ids, which the store de-duplicates.
        assert set(stored) - set(producer.accepted) <= set(producer.refused)
