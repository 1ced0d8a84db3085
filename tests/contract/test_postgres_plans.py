"""PostgreSQL reads a topic's rows in ``seq`` order as one range of ``(topic_id, seq)``
(``dialects.one_topic``): never by walking the primary key past other topics' rows, nor
by sorting the topic. Checked on the plans PostgreSQL runs, custom and generic, for the
page reader's statement, the engine's page query (exports, CLI reads, pg8000) and the
live tail's last seq, on topics stored one after another and interleaved, first and
deep pages, the lowest, a middle and the highest topic id."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, text

from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.port import PageRequest
from latam.storage.repository import PAGE_COLUMNS, SqlStore
from latam.storage.server_pages import page_statement

PAD = '{"pad":"' + "x" * 150 + '"}'  # rows of about the size the bench writes
# Topic sizes: a block of the first, then the three interleaved, then more of the last.
ALONE, ROUNDS, PER_ROUND, TAIL = 20_000, 20, (50, 1_000, 50), 20_000
PROBE = 101
# Blocks a page of PROBE rows may touch: the index's path and leaves, the rows' pages.
MAX_BUFFERS = 40


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqlStore, list[int]]]:
    from tests.databases import temporary_database

    tmp = tmp_path_factory.mktemp("plans")
    with temporary_database("postgresql", tmp) as url:
        engine = build_engine(url, Settings(data_dir=tmp))
        migrate.upgrade(engine)
        sql_store = SqlStore(engine)
        ids = [sql_store.create_topic(f"t{n}").id for n in range(3)]
        written = [0, 0, 0]

        def write(n: int, count: int) -> None:
            start, written[n] = written[n], written[n] + count
            batch = range(start, start + count)
            sql_store.write_messages(
                [(ids[n], NewMessage(f"t{n}", f"m{i}", PAD, {}, now)) for i in batch]
            )

        now = datetime.now(UTC)
        for _ in range(ALONE // 2_000):
            write(0, 2_000)
        for _ in range(ROUNDS):
            for n, count in enumerate(PER_ROUND):
                write(n, count)
        for _ in range(TAIL // 2_000):
            write(2, 2_000)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE messages"))
        yield sql_store, ids
        sql_store.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def check(plan: dict[str, Any]) -> None:
    """A page's worth of work: no row of another topic read and thrown away, no sort of
    more than a page (past the table's last seq the primary key's range is empty, and
    sorting nothing is fine), a page's worth of blocks."""
    text_of = json.dumps(plan)[:3000]
    scans = [node for node in nodes(plan) if node.get("Relation Name") == "messages"]
    assert scans, text_of
    assert all(node.get("Rows Removed by Filter", 0) == 0 for node in scans), text_of
    assert all(node["Actual Rows"] <= PROBE + 1 for node in scans), text_of  # + the next
    sorts = [node for node in nodes(plan) if node["Node Type"] in {"Sort", "Incremental Sort"}]
    assert all(node["Actual Rows"] <= PROBE + 1 for node in sorts), text_of
    blocks = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert blocks <= MAX_BUFFERS, text_of


def explain(conn: Connection, sql: str, values: dict[str, Any], *, generic: bool) -> Any:
    """The plan PostgreSQL runs for ``sql`` (``:name`` binds): with the values planned in
    (a custom plan), or as a prepared statement's generic plan."""
    options = "ANALYZE, BUFFERS, FORMAT JSON"
    if not generic:
        found = conn.execute(text(f"EXPLAIN ({options}) {sql}"), values).scalar_one()
    else:
        names = list(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", sql)))
        numbered = re.sub(r"(?<![:\w]):(\w+)", lambda m: f"${names.index(m[1]) + 1}", sql)
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(f"PREPARE page AS {numbered}")
        arguments = ", ".join(repr(values[name]) for name in names)
        found = conn.exec_driver_sql(f"EXPLAIN ({options}) EXECUTE page({arguments})").scalar()
        conn.exec_driver_sql("DEALLOCATE page")
        conn.exec_driver_sql("RESET plan_cache_mode")
    plan = found if isinstance(found, list) else json.loads(found)
    return plan[0]["Plan"]


def positions(sql_store: SqlStore, topic_id: int) -> list[int]:
    """``after_seq`` of the first page, of one in the middle, and past the end."""
    with sql_store.engine.connect() as conn:
        seqs = conn.execute(
            text("SELECT seq FROM messages WHERE topic_id = :t ORDER BY seq"), {"t": topic_id}
        ).scalars()
        ordered = list(seqs)
    return [0, ordered[len(ordered) // 2], ordered[-1]]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["lowest id", "middle id", "highest id"])
def test_the_page_readers_statement_reads_one_range(
    store: tuple[SqlStore, list[int]], which: int, generic: bool
) -> None:
    sql_store, ids = store
    for after in positions(sql_store, ids[which]):
        request = PageRequest(
            topic_id=ids[which], limit=PROBE - 1, max_bytes=1 << 20, after_seq=after
        )
        sql, values = page_statement(request, "postgresql")
        with sql_store.engine.connect() as conn:
            check(explain(conn, sql, values, generic=generic))


@pytest.mark.parametrize("which", [0, 1, 2], ids=["lowest id", "middle id", "highest id"])
def test_the_engines_queries_read_one_range(store: tuple[SqlStore, list[int]], which: int) -> None:
    sql_store, ids = store
    topic_id = ids[which]
    for after in positions(sql_store, topic_id):
        query = sql_store._page_query(PAGE_COLUMNS, topic_id, PROBE, after, None, None, None)
        compiled = query.compile(sql_store.engine, compile_kwargs={"literal_binds": True})
        with sql_store.engine.connect() as conn:
            check(explain(conn, str(compiled), {}, generic=False))
    last = sql_store._last_seq_query(topic_id)  # where a live tail starts
    compiled = last.compile(sql_store.engine, compile_kwargs={"literal_binds": True})
    with sql_store.engine.connect() as conn:
        check(explain(conn, str(compiled), {}, generic=False))
    page, more = sql_store.page_messages(topic_id, limit=100, max_bytes=1 << 20)
    assert [m.message_id for m in page] == [f"m{i}" for i in range(100)]
    assert more
    assert sql_store.last_seq(topic_id) == positions(sql_store, topic_id)[-1]
