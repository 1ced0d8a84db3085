"""Retention on every store (and the fake): exactly the messages published before the
cutoff go, oldest first in bounded batches, and the rollups stay exact (verify finds no
difference), whatever buckets the cutoff splits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from latam.domain import NewMessage
from latam.errors import NotFound
from latam.retention import Retention
from latam.storage import rollups
from latam.storage.repository import SqlStore
from tests.contract.conftest import AnyStore

START = datetime(2026, 11, 1, 23, 58, 30, tzinfo=UTC)


def fill(store: AnyStore, name: str, count: int) -> int:
    topic_id = store.create_topic(name).id
    # Every 97 s, a few sharing an instant: rows cross minute, hour and day buckets.
    times = [START + timedelta(seconds=97 * (i // 2)) for i in range(count)]
    batch = [
        (topic_id, NewMessage(name, f"m{i}", f'{{"i":{i}}}', {}, at)) for i, at in enumerate(times)
    ]
    store.write_messages(batch)
    return topic_id


def remaining(store: AnyStore, topic_id: int) -> list[str]:
    return sorted(m.message_id for m in store.list_messages(topic_id, limit=10_000))


def test_expire_deletes_exactly_the_old_rows_and_keeps_stats_exact(store: AnyStore) -> None:
    kept = fill(store, "kept", 40)
    topic_id = fill(store, "expiring", 400)
    # A cutoff inside a minute, an hour and a day that keep some of their rows.
    cutoff = START + timedelta(seconds=97 * 150 + 31)
    assert store.retained_topics() == {}
    assert store.set_retention(topic_id, 3600).retention_seconds == 3600
    assert store.retained_topics() == {topic_id: 3600}
    now = cutoff + timedelta(hours=1)
    deleted = Retention(store, batch=37, pause_seconds=0).run_once(now=now)
    expected = [f"m{i}" for i in range(400) if START + timedelta(seconds=97 * (i // 2)) >= cutoff]
    assert deleted == 400 - len(expected)
    assert remaining(store, topic_id) == sorted(expected)
    assert len(remaining(store, kept)) == 40
    assert Retention(store, batch=37).run_once(now=now) == 0  # nothing left to delete
    totals = {t.topic: t for t in store.all_stats()}
    assert totals["expiring"].count == len(expected)
    assert totals["expiring"].first_published_at == START + timedelta(seconds=97 * 151)
    assert totals["kept"].count == 40
    for bucket in ("minute", "hour", "day"):
        found = store.topic_stats(topic_id, bucket=bucket, since=None, until=None, limit=10_000)
        assert sum(b.count for b in found) == len(expected)
    if isinstance(store, SqlStore):
        assert rollups.verify(store.engine) == []
    store.set_retention(topic_id, None)
    assert store.retained_topics() == {}
    with pytest.raises(NotFound):
        store.set_retention(999_999, 60)


def test_everything_expired_leaves_no_rollups(store: AnyStore) -> None:
    topic_id = fill(store, "gone", 50)
    store.set_retention(topic_id, 60)
    assert Retention(store, batch=1000).run_once(now=START + timedelta(days=30)) == 50
    assert remaining(store, topic_id) == []
    [totals] = store.all_stats()
    assert (totals.count, totals.bytes, totals.first_published_at) == (0, 0, None)
    if isinstance(store, SqlStore):
        assert rollups.verify(store.engine) == []


def test_retention_beside_writers_and_another_retention(store: AnyStore) -> None:
    """Two retention passes at once beside a writer of old and new rows: every row is
    deleted or kept once, and the rollups still match the rows."""
    topic_id = fill(store, "busy", 300)
    store.set_retention(topic_id, 3600)
    now = START + timedelta(days=2)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(20):
                at = START if n % 2 else now
                store.write_messages(
                    [(topic_id, NewMessage("busy", f"w{n}-{i}", "{}", {}, at)) for i in range(25)]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    def expire() -> None:
        try:
            for _ in range(5):
                Retention(store, batch=40, pause_seconds=0).run_once(now=now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (write, expire, expire)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transient = [e for e in errors if "expired concurrently" in str(e)]
    assert errors == transient, errors
    Retention(store, batch=1000).run_once(now=now)
    left = store.list_messages(topic_id, limit=10_000)
    assert sorted(m.message_id for m in left) == sorted(
        f"w{n}-{i}" for n in range(0, 20, 2) for i in range(25)
    )
    if isinstance(store, SqlStore):
        assert rollups.verify(store.engine) == []
