"""The store goes away for 30 s in the middle of a 20,000-message stream.

A private PostgreSQL server is the store of ``latam api`` and ``latam worker`` (embedded
broker). While it is stopped, publishing goes on (the broker buffers), ``/readyz`` says
503 with ``checks.store == false`` and the worker backs off without exiting or spinning.
Once the server is back, every accepted message is stored exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_crash import BATCH, Producer
from tests.fault.postgres import PrivatePostgres
from tests.support import LatamProcess, create_topic, free_port, latam_env, wait_http, wait_stored

TOTAL = 20_000
DOWN_SECONDS = 30
PACE_SECONDS = 0.4  # between batches: the stream lasts about 45 s, the outage sits inside it
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class PacedProducer(Producer):
    """The crash suite's producer, slowed down so the stream spans the outage."""

    def run(self) -> None:
        sent = 0
        while sent < self.limit and not self.halt.is_set():
            ids = [f"{self.marker}-{sent + i}" for i in range(BATCH)]
            body = {"messages": [{"id": i, "data": {"id": i}} for i in ids]}
            response = self.client.post(f"/v1/topics/{self.topic_id}/messages", json=body)
            if response.status_code == 202:
                self.accepted.extend(response.json()["message_ids"])
            sent += BATCH
            time.sleep(PACE_SECONDS)


def test_store_down_for_30s_loses_nothing(tmp_path: Path) -> None:
    store = PrivatePostgres().init()
    store.start()
    port = free_port()
    env = latam_env(tmp_path / "data", port=port, database_url=store.url)
    api = worker = None
    try:
        migrate = LatamProcess(["migrate"], env, tmp_path / "migrate.log").start()
        assert migrate.proc is not None
        assert migrate.proc.wait(60) == 0, migrate.log()
        api = LatamProcess(["api"], env, tmp_path / "api.log").start()
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", proc=api)
        worker = LatamProcess(["worker"], env, tmp_path / "worker.log").start()
        with httpx.Client(base_url=base, timeout=30) as client:
            topic_id = create_topic(client)
            producer = PacedProducer(client, topic_id, limit=TOTAL)
            producer.start()
            time.sleep(3)
            store.stop()
            down_at, accepted_before = time.monotonic(), len(producer.accepted)
            time.sleep(2)
            ready = client.get("/readyz")
            time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
            accepted_while_down = len(producer.accepted) - accepted_before
            log_lines_down = len(worker.log().splitlines())
            assert worker.proc is not None
            assert worker.proc.poll() is None, "the worker exited while the store was down"
            store.start()
            producer.join(300)
            stored = wait_stored(client, topic_id, set(producer.accepted), timeout=180)
        # Each failed write is logged once, then the worker waits (with backoff) for the
        # store and writes the batch in hand again: no nack, no delivery attempt spent.
        failures = worker.log().count("store write failed")
        waits = worker.log().count("waiting for the store")
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.terminate()
        store.stop_if_running()
    accepted = producer.accepted
    print(
        f"store-down: accepted={len(accepted)} stored={len(stored)} "
        f"duplicated={len(stored) - len(set(stored))} lost={len(set(accepted) - set(stored))} "
        f"accepted_while_down={accepted_while_down} worker_failed_writes={failures} "
        f"worker_log_lines={log_lines_down}"
    )
    assert ready.status_code == 503, ready.text
    assert ready.headers["content-type"].startswith("application/problem+json")
    assert ready.json()["checks"]["store"] is False
    assert accepted_while_down > 0, "publishing stopped while the store was down"
    assert 1 <= failures <= 100, f"the worker did not back off: {failures} failed writes"
    assert waits >= 1, "the worker did not wait for the store"
    assert log_lines_down < 1000, "the worker's log grew without bound while the store was down"
    assert len(stored) == len(set(stored)), "a message was stored twice"
    assert set(accepted) == set(stored), "a message the API accepted was lost"
