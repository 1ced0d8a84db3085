"""A direct producer that makes mistakes never stops the pipeline: each malformed row on
the embedded queue becomes a dead letter with its reason, every good row around it is
stored, and the worker is never restarted because of a message."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import orjson

from tests.e2e.test_pipeline import list_dead_letters
from tests.support import create_topic, running_serve, unique, wait_for_count

GOOD = 20


def insert(path: Path, body: object, attributes: object, published_at: object) -> None:
    """One row as a careless producer writes it: any column may hold anything."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO queue (body, attributes, published_at, available_at) VALUES (?, ?, ?, ?)",
            (body, attributes, published_at, time.time()),
        )


def test_malformed_rows_are_dead_lettered_and_good_ones_stored(tmp_path: Path) -> None:
    with (
        running_serve(tmp_path) as (base, proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        name = unique("hostile-")
        topic_id = create_topic(client, name)
        queue = tmp_path / "broker.db"
        now = time.time()

        def attrs(**extra: object) -> str:
            return orjson.dumps({"topic": name, **extra}).decode()

        bad = {
            "far-future": (b"{}", attrs(published_at="9999-12-31T23:59:59-01:00"), now),
            "millis": (b"{}", attrs(published_at="1733112345000"), now),
            "list-attrs": (b"{}", orjson.dumps([name]).decode(), now),
            "not-json-attrs": (b"{}", "{topic:", now),
            "int-id": (b"{}", attrs(message_id=5), now),
            "not-json-body": (b"not json", attrs(), now),
            "text-time": (b"{}", attrs(), "yesterday"),
            "huge-time": (b"{}", attrs(), 1e300),
        }
        for i in range(GOOD // 2):
            insert(queue, b'{"n": %d}' % i, attrs(message_id=f"good-{i}"), now)
        for row in bad.values():
            insert(queue, *row)
        for i in range(GOOD // 2, GOOD):
            insert(queue, b'{"n": %d}' % i, attrs(message_id=f"good-{i}"), now)

        stored = wait_for_count(client, topic_id, GOOD, timeout=30)
        deadline = time.monotonic() + 30
        letters: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(letters) < len(bad):
            letters = [d for d in list_dead_letters(client) if d["reason"] != "unknown_topic"]
            time.sleep(0.2)
        log = proc.log()
    assert sorted(m["id"] for m in stored) == sorted(f"good-{i}" for i in range(GOOD))
    assert sorted(str(d["reason"]) for d in letters) == sorted(
        [
            "invalid_timestamp",  # far future: valid ISO 8601 beyond year 9999 UTC
            "invalid_timestamp",  # milliseconds
            "invalid_attributes",  # a list
            "invalid_attributes",  # not JSON
            "invalid_attributes",  # a number where a string belongs
            "invalid_json",
            "invalid_timestamp",  # text in the published_at column
            "invalid_timestamp",  # a number no clock can hold
        ]
    )
    assert "worker exited" not in log, log[-2000:]
