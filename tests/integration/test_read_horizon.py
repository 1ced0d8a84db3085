"""A reader following cursors never skips a row, whatever the writers do: a writer whose
transaction stays open holds back the writers of its topic, so a page can never end
past a row that will commit later with a lower seq."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from tests.databases import STORES, temporary_database


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    with temporary_database(request.param, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        made = SqlStore(engine)
        yield made
        made.close()


def batch(topic: str, prefix: str, count: int) -> list[tuple[int, NewMessage]]:
    return [
        (1, NewMessage(topic=topic, message_id=f"{prefix}-{i}", data="{}")) for i in range(count)
    ]


def read_from(store: SqlStore, topic_id: int, after: int) -> tuple[list[str], int]:
    """Follow pages of two from ``after`` to the end; the ids seen and the last seq."""
    seen: list[str] = []
    while page := store.list_messages(topic_id, limit=2, after_seq=after):
        seen.extend(m.message_id for m in page)
        after = page[-1].seq
    return seen, after


def test_a_reader_never_pages_past_an_uncommitted_writer(store: SqlStore) -> None:
    topic = store.create_topic("horizon")
    assert topic.id == 1
    store.write_messages(batch("horizon", "before", 3))
    inserted, release = threading.Event(), threading.Event()
    real_insert = store._insert_new

    def slow_insert(*args: Any) -> Any:
        fresh = real_insert(*args)
        if not inserted.is_set():  # the first writer: rows inserted, seqs taken, no commit
            inserted.set()
            assert release.wait(30)
        return fresh

    store._insert_new = slow_insert  # type: ignore[method-assign]
    first = threading.Thread(target=store.write_messages, args=(batch("horizon", "slow", 5),))
    first.start()
    assert inserted.wait(30)
    second = threading.Thread(target=store.write_messages, args=(batch("horizon", "fast", 5),))
    second.start()
    time.sleep(0.5)  # time enough for the second writer to commit, were it not held back
    seen, last = read_from(store, topic.id, 0)
    release.set()
    first.join(30)
    second.join(30)
    rest, _ = read_from(store, topic.id, last)
    expected = [f"{p}-{i}" for p, n in (("before", 3), ("slow", 5), ("fast", 5)) for i in range(n)]
    assert sorted(seen + rest) == sorted(expected)
    assert len(seen + rest) == len(expected)  # and nothing twice
