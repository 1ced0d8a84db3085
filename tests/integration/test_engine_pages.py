"""The page reader of the server stores that runs in threads (``EnginePages``: MySQL and
MariaDB, PostgreSQL through the Cloud SQL connector's driver), on a real server: its
connections are not checked before use, so a connection the server closed must cost a
second try, not a failed read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, make_url, text

from latam.bootstrap import page_reader
from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.port import PageRequest
from latam.storage.repository import SqlStore
from latam.storage.server_pages import EnginePages
from tests.databases import temporary_database

KILL = {
    "mysql": (
        "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()",
        "KILL {}",
    ),
    "postgresql": (
        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()",
        "SELECT pg_terminate_backend({})",
    ),
}


@pytest.fixture(params=["mysql", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    url = str(request.param)
    with temporary_database(url, tmp_path) as made:
        engine = build_engine(made, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        sql_store = SqlStore(engine)
        topic = sql_store.create_topic("flights").id
        sql_store.write_messages(
            [(topic, NewMessage("flights", f"m{n}", f'{{"n":{n}}}')) for n in range(30)]
        )
        yield sql_store
        sql_store.close()


def reader_of(store: SqlStore, tmp_path: Path) -> EnginePages:
    settings = Settings(data_dir=tmp_path, database_url=str(store.engine.url))
    if store.engine.dialect.name != "postgresql":
        reader = page_reader(store, settings)
        assert isinstance(reader, EnginePages)
        return reader
    # PostgreSQL reads through psycopg on the event loop; EnginePages is its reader
    # through the Cloud SQL connector's driver, on the same kind of engine.
    url = store.engine.url.render_as_string(hide_password=False)
    return EnginePages(store, build_engine(url, settings, reads=True), owned=True)


def close_reader_connections(store: SqlStore, reader: EnginePages) -> int:
    """Close, from the server, every connection of the reader's database but the
    store's own one: what a server restart does to a pool."""
    find, kill = KILL["mysql" if store.engine.dialect.name != "postgresql" else "postgresql"]
    database = make_url(str(reader.engine.url)).database
    admin: Engine = store.engine
    with admin.connect() as conn:
        ids = [row[0] for row in conn.execute(text(find), {"db": database})]
        for found in ids:
            conn.execute(text(kill.format(int(found))))
        conn.commit()
    return len(ids)


def test_a_connection_the_server_closed_costs_a_second_try(store: SqlStore, tmp_path: Path) -> None:
    reader = reader_of(store, tmp_path)

    async def pages() -> list[list[str]]:
        seen = []
        try:
            for after in (0, 10, 20):
                request = PageRequest(1, 10, 1 << 20, after)
                page = await reader.page(request, heavy=True)
                seen.append([row["id"] for row in orjson.loads(page.array)])
                if after == 0:
                    assert close_reader_connections(store, reader) >= 1
        finally:
            await reader.aclose()
        return seen

    seen = asyncio.run(pages())
    assert seen == [[f"m{n}" for n in range(start, start + 10)] for start in (0, 10, 20)]


def test_the_reads_engine_runs_single_statements_in_autocommit(
    store: SqlStore, tmp_path: Path
) -> None:
    """No ping before a read and no rollback after it: each a round trip."""
    reader = reader_of(store, tmp_path)
    try:
        pool = reader.engine.pool
        assert pool._pre_ping is False
        with reader.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert reader.engine.dialect.detect_autocommit_setting(raw)
        assert reader.engine.dialect.skip_autocommit_rollback is True
    finally:
        asyncio.run(reader.aclose())
