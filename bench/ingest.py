"""E2E ingest: N messages over HTTP in batches to a running latam, until all are readable."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench.common import batch_body, payload


def create_topic(base: str, name: str) -> int:
    response = httpx.post(f"{base}/v1/topics", json={"name": name}, timeout=30)
    response.raise_for_status()
    return int(response.json()["id"])


def count_stored(client: httpx.Client, topic_id: int) -> int:
    """Stored messages of a topic, read through the API (stats when available, else pages)."""
    stats = client.get(f"/v1/topics/{topic_id}/stats", params={"bucket": "day"})
    if stats.status_code == 200:
        return int(stats.json()["total"]["count"])
    total, cursor = 0, None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/topics/{topic_id}/messages", params=params).json()
        total += len(page["data"])
        if not (cursor := page["next_cursor"]):
            return total


def publish_and_wait(
    base: str,
    topic_id: int,
    run: str,
    total: int,
    *,
    batch: int = 500,
    concurrency: int = 4,
    make: Callable[[str, int], dict[str, Any]] = payload,
) -> float:
    """Seconds from the first request to the moment all ``total`` (each message's data
    made by ``make``) are readable."""
    bodies = [
        batch_body(run, start, min(batch, total - start), make) for start in range(0, total, batch)
    ]
    headers = {"content-type": "application/json"}
    path = f"/v1/topics/{topic_id}/messages"
    with httpx.Client(base_url=base, timeout=60) as client:

        def send(body: bytes) -> None:
            for _ in range(20):
                response = client.post(path, content=body, headers=headers)
                if response.status_code == 202:
                    return
                time.sleep(0.2)
            raise RuntimeError(f"publish failed: {response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, bodies))
        accepted = time.perf_counter()
        # Counting scans the topic in the database: look rarely until the end is near, so
        # the measurement does not compete with the pipeline it measures.
        while (stored := count_stored(client, topic_id)) < total:
            time.sleep(0.5 if stored < 0.9 * total else 0.05)
        done = time.perf_counter()
    print(f"  accepted in {accepted - started:.2f}s, readable in {done - started:.2f}s")
    return done - started
