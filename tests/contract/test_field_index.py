"""``latam index create``: an index on a topic's field that the filters' statements use,
on every SQL store, without changing what they select."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from latam.bootstrap import page_reader
from latam.cli import main
from latam.domain import NewMessage
from latam.filters import parse_filters
from latam.service import Service
from latam.settings import Settings
from latam.storage import field_index, migrate
from latam.storage.dialects import build_engine
from latam.storage.filter_sql import where_sql
from latam.storage.pages import COLUMNS, IN_INGEST_ORDER
from latam.storage.port import PageRequest
from latam.storage.repository import SqlStore
from latam.storage.server_pages import page_statement
from tests.databases import STORES, temporary_database
from tests.fakes import MemoryBroker

ROWS = 3_000


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with temporary_database(request.param, tmp_path) as made:
        engine = build_engine(made, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        store = SqlStore(engine)
        topic = store.create_topic("flights").id
        other = store.create_topic("other").id
        batch = []
        for n in range(ROWS):
            data = {"flight": f"LA{n % 300}", "delay_min": n % 97, "origin": "SCL"}
            batch.append((topic, NewMessage("flights", f"m{n}", orjson.dumps(data).decode())))
            batch.append((other, NewMessage("other", f"m{n}", '{"flight":"LA7"}')))
        store.write_messages(batch)
        store.close()
        yield made


def cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"LATAM_DATABASE_URL": url})
    return result.exit_code, result.output


def read(url: str, tmp_path: Path, query: list[tuple[str, str]], limit: int = 7) -> list[str]:
    """Every id the filtered pages hold, read by the store's own page reader."""
    store = SqlStore(build_engine(url, Settings(data_dir=tmp_path)))
    service = Service(
        store=store,
        broker=MemoryBroker(),
        max_message_bytes=1 << 18,
        pages=page_reader(store, Settings(data_dir=tmp_path, database_url=url)),
    )
    filters = parse_filters(query, reserved=())

    async def walk() -> list[str]:
        seen: list[str] = []
        cursor = None
        try:
            while True:
                body = orjson.loads(
                    await service.read_page(topic_id=1, limit=limit, cursor=cursor, filters=filters)
                )
                seen += [row["id"] for row in body["data"]]
                if (cursor := body["next_cursor"]) is None:
                    return seen
        finally:
            await service.page_reader.aclose()
            store.close()

    return asyncio.run(walk())


def plan(url: str, tmp_path: Path, query: list[tuple[str, str]]) -> str:
    """The database's plan of a filtered page's probe of topic 1."""
    engine = build_engine(url, Settings(data_dir=tmp_path))
    dialect = engine.dialect.name
    columns = field_index.indexed_columns(engine)
    where, values = where_sql(parse_filters(query, reserved=()), dialect, columns=columns)
    probe = f"SELECT seq FROM messages WHERE topic_id = 1{where} ORDER BY seq LIMIT 101"
    explain = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN "}.get(dialect, "EXPLAIN ")
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE messages")
        rows = conn.execute(text(explain + probe), values).all()
    engine.dispose()
    return "\n".join(" ".join(str(cell) for cell in row) for row in rows)


def test_an_indexed_field_is_sought_and_selects_the_same_rows(url: str, tmp_path: Path) -> None:
    by_string = [("data.flight", "eq.LA7")]
    by_number = [("data.delay_min", "eq.95")]
    by_range = [("data.delay_min", "gte.95")]
    before = [read(url, tmp_path, query) for query in (by_string, by_number, by_range)]
    assert len(before[0]) == ROWS // 300
    assert len(before[1]) == sum(1 for n in range(ROWS) if n % 97 == 95)
    assert len(before[2]) == sum(1 for n in range(ROWS) if n % 97 >= 95)
    assert "ix_field_" not in plan(url, tmp_path, by_string)

    code, out = cli(url, "index", "create", "flights", "data.flight")
    assert code == 0, out
    code, out = cli(url, "index", "create", "1", "data.delay_min", "--type", "number")
    assert code == 0, out
    field_index._CACHE.clear()  # the test reads at once what a process sees within 30 s
    assert "ix_field_1_" in plan(url, tmp_path, by_string)
    assert "ix_field_1_" in plan(url, tmp_path, by_number)
    after = [read(url, tmp_path, query) for query in (by_string, by_number, by_range)]
    assert after == before
    assert read(url, tmp_path, [("data.flight", "gt.LA99")]) == []
    assert read(url, tmp_path, [("data.flight", "lte.LA0")]) == [
        f"m{n}" for n in range(0, ROWS, 300)
    ]

    code, out = cli(url, "index", "list")
    assert code == 0, out
    assert "2 field indexes" in out, out
    name = out.split()[0]
    code, out = cli(url, "index", "create", "flights", "data.flight")
    assert code == 1, out
    assert "already indexed" in out, out
    code, out = cli(url, "index", "drop", name)
    assert code == 0, out
    code, out = cli(url, "index", "list")
    assert "1 field indexes" in out, out


def test_bad_index_requests_name_what_is_wrong(url: str) -> None:
    code, out = cli(url, "index", "create", "flights", "data..flight")
    assert code == 2, out
    assert "FIELD" in out, out
    code, out = cli(url, "index", "create", "nowhere", "data.flight")
    assert code == 1, out
    assert "does not exist" in out, out
    code, out = cli(url, "index", "drop", "ix_field_1_0000000000")
    assert code == 1, out
    assert "no field index" in out, out
    code, out = cli(url, "index", "create", "flights", "data.flight", "--type", "date")
    assert code == 2, out
    code, out = cli(url, "index", "create", "²", "data.flight")  # a digit, not 0-9
    assert code == 1, out
    assert "does not exist" in out, out


def test_a_string_index_seeks_in_code_point_order(url: str, tmp_path: Path) -> None:
    """MySQL/MariaDB's column was utf8mb4_bin, which pads with spaces: "a\t" sorted
    before "a" in it, so a range seek missed rows the filter selects."""
    store = SqlStore(build_engine(url, Settings(data_dir=tmp_path)))
    flights = ["a", "a\t", "a ", "a\u0001", "b", "a" * 300 + "\t", "a" * 300]
    store.write_messages(
        [
            (1, NewMessage("flights", f"s{n}", orjson.dumps({"flight": flight}).decode()))
            for n, flight in enumerate(flights)
        ]
    )
    store.close()
    queries = [
        [("data.flight", "gt.a")],
        [("data.flight", "gte.a\t")],
        [("data.flight", "lt.a ")],
        [("data.flight", "lte.a\t")],
        [("data.flight", "eq.a")],
        [("data.flight", "gt." + "a" * 300)],
    ]
    before = [read(url, tmp_path, query, limit=1000) for query in queries]
    assert before[0] == [f"s{n}" for n in (1, 2, 3, 4, 5, 6)]
    code, out = cli(url, "index", "create", "flights", "data.flight")
    assert code == 0, out
    field_index._CACHE.clear()
    assert [read(url, tmp_path, query, limit=1000) for query in queries] == before


def test_a_deep_message_is_stored_once_a_field_is_indexed(url: str, tmp_path: Path) -> None:
    """MariaDB's generated column read the JSON past its 32 levels: the insert of a deeper
    message, into any topic, failed in strict mode and its batch was retried forever."""
    code, out = cli(url, "index", "create", "flights", "data.flight")
    assert code == 0, out
    deep = '{"flight":"LA7","d":' + "[" * 40 + "]" * 40 + "}"
    store = SqlStore(build_engine(url, Settings(data_dir=tmp_path)))
    store.write_messages(
        [(1, NewMessage("flights", "deep", deep)), (2, NewMessage("other", "deep", deep))]
    )
    store.close()
    assert len(read(url, tmp_path, [("data.flight", "eq.LA7")])) >= ROWS // 300


def test_unfiltered_pages_keep_the_topic_index_once_a_field_is_indexed(
    url: str, tmp_path: Path
) -> None:
    """An index of a field is for filtered pages: the planner must not read an
    unfiltered page of the topic through it (it would sort the whole topic). The test's
    database has no statistics of its own (nothing has analyzed it), as a server with
    autovacuum off or a table just bulk-loaded: `latam index create` gathers them."""
    code, out = cli(url, "index", "create", "flights", "data.flight")
    assert code == 0, out
    code, out = cli(url, "index", "create", "flights", "data.delay_min", "--type", "number")
    assert code == 0, out
    engine = build_engine(url, Settings(data_dir=tmp_path))
    dialect = engine.dialect.name
    for after in (0, ROWS // 2):
        request = PageRequest(topic_id=1, limit=100, max_bytes=1 << 20, after_seq=after)
        if dialect == "sqlite":  # the statement of storage/pages.py, as SqlitePages runs it
            sql = "EXPLAIN QUERY PLAN " + COLUMNS + IN_INGEST_ORDER
            values = {"topic": 1, "after": after, "probe": 101, "cap": 1 << 20}
        else:
            sql, values = page_statement(request, dialect)
            sql = "EXPLAIN " + sql
        with engine.connect() as conn:
            rows = conn.execute(text(sql), values).all()
        found = "\n".join(" ".join(str(cell) for cell in row) for row in rows)
        assert "ix_field_" not in found, found
    engine.dispose()
