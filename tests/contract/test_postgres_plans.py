"""PostgreSQL reads a page in ingest order as one range of ``(topic_id, seq)``, never by
walking the primary key past other topics' rows (``dialects.in_ingest_order``): checked
on the plans PostgreSQL runs, for the page reader's statement and for the engine's query
(exports, ``latam`` CLI reads), with topics stored one after another."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.port import PageRequest
from latam.storage.repository import PAGE_COLUMNS, SqlStore
from latam.storage.server_pages import page_statement

ROWS = 20_000  # per topic
PAD = '{"pad":"' + "x" * 150 + '"}'  # rows of about the size the bench writes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqlStore, list[int]]]:
    from tests.databases import temporary_database

    tmp = tmp_path_factory.mktemp("plans")
    with temporary_database("postgresql", tmp) as url:
        engine = build_engine(url, Settings(data_dir=tmp))
        migrate.upgrade(engine)
        sql_store = SqlStore(engine)
        ids = [sql_store.create_topic(f"t{n}").id for n in range(2)]
        now = datetime.now(UTC)
        for topic_id in ids:  # all of the first topic, then all of the second
            for start in range(0, ROWS, 2_000):
                sql_store.write_messages(
                    [
                        (topic_id, NewMessage(f"t{topic_id}", f"m{i}", PAD, {}, now))
                        for i in range(start, start + 2_000)
                    ]
                )
        with engine.begin() as conn:
            conn.execute(text("ANALYZE messages"))
        yield sql_store, ids
        sql_store.close()


def removed_by_filter(plan: Any) -> int:
    """Rows every node of a JSON plan read and threw away."""
    own = int(plan.get("Rows Removed by Filter", 0))
    return own + sum(removed_by_filter(child) for child in plan.get("Plans", []))


def explain(store: SqlStore, sql: str, values: dict[str, Any]) -> Any:
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), values).scalar_one()
    plan = rows if isinstance(rows, list) else json.loads(rows)
    return plan[0]["Plan"]


@pytest.mark.parametrize("after", [0, ROWS // 2])
def test_the_page_reader_reads_only_the_topics_rows(
    store: tuple[SqlStore, list[int]], after: int
) -> None:
    sql_store, ids = store
    second = ids[1]
    after_seq = 0 if after == 0 else ROWS + after  # seqs of the second topic follow
    request = PageRequest(topic_id=second, limit=100, max_bytes=1 << 20, after_seq=after_seq)
    sql, values = page_statement(request, "postgresql")
    plan = explain(sql_store, sql, values)
    assert removed_by_filter(plan) == 0, json.dumps(plan)[:2000]


def test_the_engines_page_reads_only_the_topics_rows(store: tuple[SqlStore, list[int]]) -> None:
    sql_store, ids = store
    query = sql_store._page_query(PAGE_COLUMNS, ids[1], 101, 0, None, None, None)
    compiled = query.compile(sql_store.engine, compile_kwargs={"literal_binds": True})
    plan = explain(sql_store, str(compiled), {})
    assert removed_by_filter(plan) == 0, json.dumps(plan)[:2000]
    page, more = sql_store.page_messages(ids[1], limit=100, max_bytes=1 << 20)
    assert [m.message_id for m in page] == [f"m{i}" for i in range(100)]
    assert more
