"""The ``latam_db_pool_*`` gauges read the store's pool: in use, idle, waiting, limit,
on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine

from latam import metrics
from latam.settings import Settings
from latam.storage.dialects import SQLITE_POOL_SIZE, build_engine
from latam.storage.repository import SqlStore
from tests.databases import temporary_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with temporary_database(request.param, tmp_path) as found:
        yield found


def small_engine(url: str, tmp_path: Path) -> Engine:
    """One connection at most, so that a second checkout waits."""
    if url.startswith("sqlite"):
        return create_engine(url, pool_size=1, max_overflow=0, pool_timeout=10)
    settings = Settings(data_dir=tmp_path, db_pool_size=1, db_max_overflow=0)
    return build_engine(url, settings)


def test_store_pool_in_use_idle_and_limit(url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, db_pool_size=2, db_max_overflow=3)
    store = SqlStore(build_engine(url, settings))
    limit = 2 * SQLITE_POOL_SIZE if url.startswith("sqlite") else 5
    try:
        assert store.pool_usage() == (0, 0, 0, limit)
        with store.engine.connect(), store.engine.connect():
            assert store.pool_usage() == (2, 0, 0, limit)
        assert store.pool_usage() == (0, 2, 0, limit)
    finally:
        store.close()


def test_a_checkout_at_the_limit_is_waiting(url: str, tmp_path: Path) -> None:
    store = SqlStore(small_engine(url, tmp_path))
    got: list[Connection] = []
    try:
        with store.engine.connect():
            waiter = threading.Thread(target=lambda: got.append(store.engine.connect()))
            waiter.start()
            deadline = time.monotonic() + 10
            while store.pool_usage() != (1, 0, 1, 1) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert store.pool_usage() == (1, 0, 1, 1)
        waiter.join(10)
        assert got, "the waiting checkout never got the connection"
        assert store.pool_usage() == (1, 0, 0, 1)
        got[0].close()
    finally:
        store.close()


def test_gauges_sum_the_watched_pools_when_sampled(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_SOURCES", weakref.WeakSet())
    stores = [SqlStore(small_engine(url, tmp_path)) for _ in range(2)]
    try:
        with stores[0].engine.connect():
            body, _ = metrics.exposition("")  # a scrape samples the pools
        text = body.decode()
        assert 'latam_db_pool_connections{pool="store",state="in_use"} 1.0' in text
        assert 'latam_db_pool_connections{pool="store",state="idle"} 0.0' in text
        assert 'latam_db_pool_waiting{pool="store"} 0.0' in text
        assert 'latam_db_pool_max_connections{pool="store"} 2.0' in text
        metrics.sample_pools()
        assert metrics.DB_POOL_CONNECTIONS.labels(pool="store", state="idle")._value.get() == 1
    finally:
        for store in stores:
            store.close()


def test_a_pool_that_cannot_tell_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_SOURCES", weakref.WeakSet())
    store = SqlStore(create_engine("sqlite://"))  # an in-memory database: not a queue pool
    assert store.pool_usage() is None
    waiting = metrics.DB_POOL_WAITING.labels(pool="store")
    waiting.set(7)
    try:
        metrics.sample_pools()  # nothing to read: the gauges keep what they held
        assert waiting._value.get() == 7
    finally:
        waiting.set(0)
