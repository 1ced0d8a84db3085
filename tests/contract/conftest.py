"""Fixtures the store contract suites share: a store, and a service on one, on every SQL
store and the in-memory fake (``tests/fakes.py``), so the fake cannot drift."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from latam.bootstrap import page_reader, stats_reader
from latam.service import Service
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from tests.databases import STORES, temporary_database
from tests.fakes import MemoryBroker, MemoryStore

AnyStore = SqlStore | MemoryStore
T = TypeVar("T")


def run_reads(service: Service, reads: Awaitable[T]) -> T:
    """``reads`` in an event loop of its own, the page reader closed in that loop after:
    a connection pool left open would still be connecting when ``asyncio.run`` cancels
    its tasks on the way out, and psycopg's pool then never finishes cancelling."""

    async def run() -> T:
        try:
            return await reads
        finally:
            await service.page_reader.aclose()

    return asyncio.run(run())


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
    """A service on the store, with the store's own page and stats readers, as
    ``bootstrap.build_service`` makes it."""
    if request.param == "memory":
        yield Service(store=MemoryStore(), broker=MemoryBroker(), max_message_bytes=1 << 18)
        return
    with temporary_database(request.param, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        store = SqlStore(engine)
        pages = page_reader(store, Settings(data_dir=tmp_path))
        yield Service(
            store=store,
            broker=MemoryBroker(),
            max_message_bytes=1 << 18,
            pages=pages,
            stats=stats_reader(pages),
        )
        store.close()


async def read_json_pages(
    service: Service, topic_id: int, *, limit: int, **window: datetime | None
) -> list[list[dict[str, Any]]]:
    """Every page of a topic (or of a window) as ``Service.read_page`` serves it over HTTP,
    walked in one event loop; each page's rows, parsed."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    try:
        while True:
            body = orjson.loads(
                await service.read_page(topic_id=topic_id, limit=limit, cursor=cursor, **window)
            )
            pages.append(body["data"])
            cursor = body["next_cursor"]
            if cursor is None:
                return pages
    finally:
        await service.page_reader.aclose()  # in the loop that opened it
