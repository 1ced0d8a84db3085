"""Fixtures the store contract suites share: a store, and a service on one, on every SQL
store and the in-memory fake (``tests/fakes.py``), so the fake cannot drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from latam.bootstrap import sqlite_pages
from latam.service import Service
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from tests.databases import STORES, temporary_database
from tests.fakes import MemoryBroker, MemoryStore

AnyStore = SqlStore | MemoryStore


@pytest.fixture(params=[*STORES, "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    with temporary_database(request.param, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        sql_store = SqlStore(engine)
        yield sql_store
        sql_store.close()


@pytest.fixture(params=[*STORES, "memory"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A service on the store, with the store's own JSON page reader where it has one."""
    if request.param == "memory":
        yield Service(store=MemoryStore(), broker=MemoryBroker(), max_message_bytes=1 << 18)
        return
    with temporary_database(request.param, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        store = SqlStore(engine)
        yield Service(
            store=store, broker=MemoryBroker(), max_message_bytes=1 << 18, pages=sqlite_pages(store)
        )
        store.close()
