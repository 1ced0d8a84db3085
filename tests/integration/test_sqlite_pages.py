"""The embedded store's page statements on a real SQLite file: what SQLite does with
them (their plans, and which rows they read), beyond the pages they return, which the
contract suites compare on every store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.pages import SqlitePages
from latam.storage.port import PageRequest
from latam.storage.repository import SqlStore

BASE = datetime(2026, 6, 1, tzinfo=UTC)
SEQ_INDEX = "ix_messages_topic_id_seq_bytes"
TIME_INDEX = "ix_messages_topic_id_published_at_seq_bytes"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """Topic 1: 2,000 rows at 20 instants (100 each), then one row alone at an instant."""
    engine = build_engine(f"sqlite:///{tmp_path / 'latam.db'}", Settings(data_dir=tmp_path))
    migrate.upgrade(engine)
    sql_store = SqlStore(engine)
    topic = sql_store.create_topic("flights").id
    rows = [
        (topic, NewMessage("flights", f"m{n}", f'{{"n":{n:04d}}}', {}, BASE + timedelta(n // 100)))
        for n in range(2_000)
    ]
    rows.append((topic, NewMessage("flights", "alone", "{}", {}, BASE + timedelta(days=30))))
    sql_store.write_messages(rows)
    yield sql_store
    sql_store.close()


def plans(conn: sqlite3.Connection, statements: list[tuple[str, Any]]) -> str:
    return "\n".join(
        str(row[3])
        for sql, values in statements
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql, values).fetchall()
    )


def test_a_time_window_page_after_a_lone_row_seeks_the_time_index(
    store: SqlStore, tmp_path: Path
) -> None:
    """A cursor on the last row of its instant, in a window with an upper bound: the
    rest of that instant is a seek of the time index, on both page paths. With the upper
    bound written next to ``published_at =``, SQLite walked the topic in seq order."""
    path = tmp_path / "latam.db"
    seq, _ = sqlite3.connect(path).execute("SELECT max(seq), 0 FROM messages").fetchone()
    alone = BASE + timedelta(days=30)
    window = {"since": BASE, "until": BASE + timedelta(days=60)}
    request = PageRequest(1, 100, 1 << 20, seq - 1, alone, **window)

    pages = SqlitePages(path)
    conn = pages._connection()
    executed: list[tuple[str, Any]] = []
    conn.set_trace_callback(lambda sql: executed.append((sql, ())))
    page = pages.read(request)
    conn.set_trace_callback(None)
    assert (page.rows, page.last, page.more) == (1, (seq, alone), False)
    assert len(executed) == 2  # the rest of the instant, then what follows
    plan = plans(conn, executed)
    assert TIME_INDEX in plan, plan
    assert SEQ_INDEX not in plan, plan

    caught: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, sql: str, values: Any, *_: Any) -> None:
        if "FROM messages" in sql:
            caught.append((sql, values))

    event.listen(store.engine, "before_cursor_execute", catch)
    items, more = store.page_messages(
        1, limit=100, max_bytes=1 << 20, after_seq=seq - 1, after_time=alone, **window
    )
    event.remove(store.engine, "before_cursor_execute", catch)
    assert ([m.message_id for m in items], more) == (["alone"], False)
    plan = plans(conn, caught)
    assert TIME_INDEX in plan, plan
    assert SEQ_INDEX not in plan, plan

    past_the_window = PageRequest(1, 100, 1 << 20, seq - 1, alone, BASE, alone)
    assert pages.read(past_the_window).rows == 0


def test_a_page_cut_by_its_budget_costs_what_its_rows_do(store: SqlStore, tmp_path: Path) -> None:
    """The statement is stepped through and dropped where the page ends (one row past
    it, to know whether more follow), at ``limit`` rows or at the byte budget: a page of
    1,000 cut by its budget after 8 rows costs SQLite about what a page of 8 does, not
    what one of 1,000 does."""
    pages = SqlitePages(tmp_path / "latam.db")
    conn = pages._connection()

    def steps(request: PageRequest) -> tuple[int, int]:
        counted: list[int] = []
        conn.set_progress_handler(lambda: counted.append(1), 1)
        page = pages.read(request)
        conn.set_progress_handler(None, 1)
        return page.rows, len(counted)

    rows, few = steps(PageRequest(1, 8, 1 << 20, 0))
    assert rows == 8
    rows, many = steps(PageRequest(1, 1_000, 1 << 20, 0))
    assert rows == 1_000
    rows, cut = steps(PageRequest(1, 1_000, 8 * 12 - 1, 0))  # rows of 12 bytes (10 + 2)
    assert rows == 8
    assert cut < 2 * few, (few, cut)
    assert many > 20 * few, (few, many)


def test_a_row_bigger_than_the_light_budget_is_read_in_a_thread(
    store: SqlStore, tmp_path: Path
) -> None:
    """On the event loop (``light``) a row bigger than the budget is not read: the page
    comes back empty with rows to follow, which the service reads again as a heavy page;
    read as such, the row comes whole."""
    big = '{"p":"' + "x" * 200_000 + '"}'
    topic = store.create_topic("big").id
    store.write_messages([(topic, NewMessage("big", "b", big, {}, BASE))])
    pages = SqlitePages(tmp_path / "latam.db")
    request = PageRequest(topic, 1, 128 * 1024)
    light = pages.read(request, light=True)
    assert (light.array, light.more, light.rows) == (b"[]", True, 0)
    whole = pages.read(request)
    assert (whole.rows, whole.more) == (1, False)
    assert big.encode() in whole.array
