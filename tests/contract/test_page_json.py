"""One read port, the same bytes: every page reader of every store (``bootstrap.page_reader``
and the ones it may fall back to) returns exactly the body ``RenderedPages`` renders from
``Store.page_messages``, for every page of the same topic, and every store returns the same
pages (apart from ``ingested_at``, which each store sets as it writes)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from latam.bootstrap import page_reader
from latam.domain import NewMessage
from latam.service import Service
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.port import PageReader, RenderedPages
from latam.storage.repository import SqlStore
from latam.storage.server_pages import EnginePages
from tests.databases import STORES, temporary_database
from tests.fakes import MemoryBroker

BASE = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
# Ids and bodies a JSON writer can get wrong: quotes, backslashes, non-ASCII, escapes.
IDS = ['q"uote', "back\\slash", "ñandú-✈", "plain", "sp ace", "emoji-🛫", "tab\\t", "/slash"]
BODIES = [
    '{"flight":"LA800","delay_min":12}',
    '{"s":"line\\nbreak \\"quoted\\" \\\\ \\u0001","n":-1.5e-7,"t":true,"z":null}',
    '{"nested":{"a":[1,2,{"b":"ü"}]},"empty":{},"list":[]}',
    '{"big":"' + "x" * 20_000 + '"}',
]
WINDOWS: list[dict[str, datetime | None]] = [
    {},
    {"since": BASE},
    {"since": BASE + timedelta(seconds=5), "until": BASE + timedelta(seconds=20)},
    {"until": BASE - timedelta(days=365 * 60)},  # only the rows published before 1970
    {"since": BASE + timedelta(days=1)},  # empty
]


def messages() -> list[NewMessage]:
    rows = []
    for n in range(40):
        published = BASE + timedelta(seconds=n // 3, microseconds=n)
        if n % 13 == 0:
            published = datetime(1969, 7, 20, 20, 17, 40, n, tzinfo=UTC)
        attributes = {"source": IDS[n % len(IDS)], "n": str(n)} if n % 2 else {}
        rows.append(
            NewMessage(
                "json",
                f"{IDS[n % len(IDS)]}-{n}",
                BODIES[n % len(BODIES)],
                attributes,
                published,
                schema_version=schema_version(n),
            )
        )
    return rows


def schema_version(n: int) -> int | None:
    """The schema version of message ``n``: some rows met one, the others none."""
    return 3 if n % 3 == 1 else None


@contextmanager
def stored(kind: str, tmp_path: Path) -> Iterator[tuple[SqlStore, int]]:
    with temporary_database(kind, tmp_path) as url:
        store = SqlStore(build_engine(url, Settings(data_dir=tmp_path)))
        migrate.upgrade(store.engine)
        topic = store.create_topic("json")
        store.create_topic("other")  # same message ids in another topic
        store.write_messages([(topic.id, m) for m in messages()])
        store.write_messages([(topic.id + 1, replace(m, topic="other")) for m in messages()])
        try:
            yield store, topic.id
        finally:
            store.close()


def readers(store: SqlStore, tmp_path: Path) -> dict[str, PageReader]:
    found: dict[str, PageReader] = {
        "chosen": page_reader(store, Settings(data_dir=tmp_path)),
        "rendered": RenderedPages(store),
    }
    if store.engine.dialect.name != "sqlite":
        found["engine"] = EnginePages(store, store.engine)
    return found


async def walk(
    service: Service, topic_id: int, limit: int, window: dict[str, datetime | None]
) -> list[bytes]:
    bodies, cursor = [], None
    while True:
        body = await service.read_page(topic_id=topic_id, limit=limit, cursor=cursor, **window)
        bodies.append(body)
        if (cursor := orjson.loads(body)["next_cursor"]) is None:
            return bodies


async def every_page(store: SqlStore, topic_id: int, reader: PageReader) -> list[bytes]:
    service = Service(store=store, broker=MemoryBroker(), max_message_bytes=1 << 18, pages=reader)
    bodies: list[bytes] = []
    try:
        for budget in (4 << 20, 64 * 1024):
            service.max_page_bytes = budget
            for window in WINDOWS:
                for limit in (1, 7, 1000):
                    bodies += await walk(service, topic_id, limit, window)
    finally:
        await reader.aclose()
    return bodies


def without_ingest_times(body: bytes) -> bytes:
    return re.sub(rb'"ingested_at":"[^"]*"', b'"ingested_at":""', body)


def test_every_reader_of_every_store_returns_the_same_bytes(tmp_path: Path) -> None:
    by_store: dict[str, list[bytes]] = {}
    with ExitStack() as stack:
        for kind in STORES:
            store, topic_id = stack.enter_context(stored(kind, tmp_path / kind))
            found = {
                name: asyncio.run(every_page(store, topic_id, reader))
                for name, reader in readers(store, tmp_path / kind).items()
            }
            expected = found.pop("rendered")
            assert len(expected) > 50
            for name, bodies in found.items():
                assert len(bodies) == len(expected), f"{kind} {name}: other pages"
                for n, (got, want) in enumerate(zip(bodies, expected, strict=True)):
                    assert got == want, f"{kind} {name}, page {n}: other bytes"
            by_store[kind] = [without_ingest_times(body) for body in expected]
    first, *others = STORES
    for kind in others:
        assert by_store[kind] == by_store[first], f"{kind} pages differ from {first}'s"
    # The first walk (limit 1, no window) holds every message, tricky ids included, each
    # with its schema version last (a number, or null).
    first_walk = by_store[first][:40]
    rows = [row for body in first_walk for row in orjson.loads(body)["data"]]
    assert [row["id"] for row in rows] == [m.message_id for m in messages()]
    assert [row["schema_version"] for row in rows] == [m.schema_version for m in messages()]
    assert all(list(row)[-1] == "schema_version" for row in rows)
    assert b'"schema_version":3}' in first_walk[1]
    assert b'"schema_version":null}' in first_walk[0]


def test_a_missing_topic_is_a_404_from_every_reader(tmp_path: Path) -> None:
    from latam.errors import NotFound

    for kind in STORES:
        with stored(kind, tmp_path / kind) as (store, topic_id):
            for name, reader in readers(store, tmp_path / kind).items():
                service = Service(
                    store=store, broker=MemoryBroker(), max_message_bytes=1 << 18, pages=reader
                )

                async def read(service: Service = service, reader: Any = reader) -> Any:
                    try:
                        return await service.read_page(topic_id=topic_id + 99, limit=5)
                    except NotFound as exc:
                        return exc
                    finally:
                        await reader.aclose()

                assert isinstance(asyncio.run(read()), NotFound), f"{kind} {name}"


def test_a_page_survives_connections_the_server_closed(tmp_path: Path) -> None:
    """PostgreSQL's pooled reader is not checked before use: a connection the server
    closed (a restart) is dropped and the page read again on a new one."""
    import psycopg

    from tests.support import POSTGRES_URL

    with stored("postgresql", tmp_path) as (store, topic_id):
        reader = page_reader(store, Settings(data_dir=tmp_path))
        service = Service(
            store=store, broker=MemoryBroker(), max_message_bytes=1 << 18, pages=reader
        )
        database = store.engine.url.database

        async def read_twice() -> tuple[bytes, bytes]:
            try:
                first = await service.read_page(topic_id=topic_id, limit=5)
                with psycopg.connect(
                    POSTGRES_URL.replace("+psycopg", ""), autocommit=True
                ) as admin:
                    killed = admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()"
                        " AND application_name = ''",
                        (database,),
                    ).fetchone()
                assert killed is not None
                assert killed[0] >= 1
                return first, await service.read_page(topic_id=topic_id, limit=5)
            finally:
                await reader.aclose()

        first, again = asyncio.run(read_twice())
        assert again == first


def test_a_mysql_page_longer_than_group_concat_is_rendered_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GROUP_CONCAT stops silently at group_concat_max_len: such a page is rendered from
    its rows instead, never returned cut."""
    from latam.storage import server_pages

    monkeypatch.setattr(server_pages, "MYSQL_MAX_CONCAT", 4096)
    with stored("mysql", tmp_path) as (store, topic_id):
        reader = EnginePages(store, store.engine)

        async def both() -> tuple[bytes, bytes]:
            service = Service(
                store=store, broker=MemoryBroker(), max_message_bytes=1 << 18, pages=reader
            )
            rendered = Service(store=store, broker=MemoryBroker(), max_message_bytes=1 << 18)
            return (
                await service.read_page(topic_id=topic_id, limit=40),
                await rendered.read_page(topic_id=topic_id, limit=40),
            )

        got, want = asyncio.run(both())
        assert len(got) > 4096 * 10
        assert got == want
