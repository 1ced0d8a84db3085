"""PostgreSQL's page-read pool (``AsyncPgPages``) on a real server, when its
connections are all taken: a read waits ``LATAM_DB_POOL_TIMEOUT_SECONDS`` and then is
refused as the store being unavailable (503), saying why."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from latam.bootstrap import page_reader
from latam.domain import NewMessage
from latam.errors import StoreUnavailable
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.port import PageRequest
from latam.storage.repository import SqlStore
from latam.storage.server_pages import AsyncPgPages
from tests.databases import temporary_database


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with temporary_database("postgresql", tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        sql_store = SqlStore(engine)
        topic = sql_store.create_topic("flights").id
        sql_store.write_messages([(topic, NewMessage("flights", "m1", '{"n":1}'))])
        yield sql_store
        sql_store.close()


def test_a_read_past_the_pool_timeout_is_refused_saying_why(
    store: SqlStore, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=str(store.engine.url),
        db_page_connections=1,
        db_pool_timeout_seconds=0.3,
    )
    reader = page_reader(store, settings)
    assert isinstance(reader, AsyncPgPages)
    request = PageRequest(topic_id=1, limit=10, max_bytes=1 << 20)

    async def scenario() -> None:
        assert (await reader.page(request, heavy=False)).rows == 1
        pool = await reader._open()
        async with pool.connection():  # the only connection, held
            with pytest.raises(StoreUnavailable, match="no store connection was free in time"):
                await reader.page(request, heavy=False)
        assert (await reader.page(request, heavy=False)).rows == 1
        await reader.aclose()

    asyncio.run(scenario())
