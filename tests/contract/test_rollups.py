"""Rollups on every SQL store: exactly the rows stored, whatever the writes did (duplicates,
redeliveries, a concurrent writer, topic deletion, rows from before the rollups existed),
and stats read from them equal to stats computed from the rows, for any range."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update

from latam.domain import BUCKET_SECONDS, NewMessage
from latam.errors import NotFound, StoreUnavailable
from latam.settings import Settings
from latam.storage import migrate, rollups
from latam.storage.dialects import build_engine
from latam.storage.pages import SqlitePages
from latam.storage.port import LOOP_ROWS
from latam.storage.repository import SqlStore
from latam.storage.schema import messages, rollup_build
from latam.storage.schema import rollups as rollups_table
from latam.storage.server_pages import AsyncPgPages
from latam.storage.stats import all_totals, topic_buckets
from tests.databases import STORES

BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


# conftest.py's ``store``, on the SQL stores only (the rollups live in the database).
sql_stores = pytest.mark.parametrize("store", STORES, indirect=True)


def instants(rnd: random.Random) -> list[datetime]:
    """Publish times over three days, some on bucket edges, some far away (before 1970,
    the last microsecond of year 9999)."""
    near = [
        BASE + timedelta(seconds=rnd.randrange(3 * 86_400), microseconds=rnd.randrange(10**6))
        for _ in range(40)
    ]
    edges = [BASE, BASE + timedelta(hours=1), BASE + timedelta(days=1) - timedelta(microseconds=1)]
    far = [
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    return near + edges + far


def write_random(store: SqlStore, rnd: random.Random, names: list[str], count: int) -> None:
    """Batches over several topics that share ids, with resends of earlier messages."""
    ids = {name: store.create_topic(name).id for name in names}
    times = instants(rnd)
    sent: list[tuple[int, NewMessage]] = []
    for _ in range(count // 20):
        batch = []
        for _ in range(20):
            if sent and rnd.random() < 0.2:
                batch.append(rnd.choice(sent))  # a redelivery: stored once, counted once
                continue
            name = rnd.choice(names)
            body = '{"v":"' + "x" * rnd.randrange(50) + '"}'
            message = NewMessage(name, f"m{rnd.randrange(count)}", body, {}, rnd.choice(times))
            batch.append((ids[name], message))
        store.write_messages(batch)
        sent.extend(batch)


@sql_stores
def test_rollups_hold_exactly_the_rows_after_duplicates_and_deletion(store: SqlStore) -> None:
    write_random(store, random.Random(1), ["a", "b", "c"], 600)
    assert rollups.verify(store.engine) == []
    store.delete_topic(store.topic_ids(["b"])["b"])
    assert rollups.verify(store.engine) == []
    with store.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(messages)).scalar_one()
        counted = conn.execute(
            select(func.sum(rollups_table.c.message_count)).where(rollups_table.c.width == 60)
        ).scalar_one()
    assert rows == counted
    assert rows > 0


def random_range(rnd: random.Random) -> tuple[datetime | None, datetime | None]:
    def at() -> datetime:
        return BASE + timedelta(
            seconds=rnd.randrange(-3600, 4 * 86_400),
            microseconds=rnd.choice([0, rnd.randrange(10**6)]),
        )

    since, until = at(), at()
    since, until = min(since, until), max(since, until)
    return rnd.choice([since, None]), rnd.choice([until, None])


@sql_stores
def test_stats_from_rollups_equal_stats_from_the_rows(store: SqlStore) -> None:
    write_random(store, random.Random(2), ["a", "b"], 800)
    topic = store.topic_ids(["a"])["a"]
    rnd = random.Random(3)
    ranges = [
        (None, None),
        (BASE, BASE + timedelta(days=2)),
        *(random_range(rnd) for _ in range(25)),
    ]
    for since, until in ranges:
        for bucket in BUCKET_SECONDS:
            if bucket == "minute" and (since is None or until is None):
                continue  # more than the 10,000-bucket cap: refused before the store is read
            args: dict[str, Any] = {
                "bucket": bucket,
                "since": since,
                "until": until,
                "limit": 10_001,
            }
            from_rows = topic_buckets(store.engine, topic, **args)
            assert rollups.buckets(store.engine, topic, **args) == from_rows, (bucket, since, until)
    assert rollups.totals(store.engine) == all_totals(store.engine)
    # The topic is looked up only when the range holds no rollup row.
    empty = {"bucket": "hour", "since": BASE - timedelta(days=9), "until": BASE, "limit": 10}
    assert rollups.buckets(store.engine, topic, **empty) == []
    for args in (empty, {"bucket": "day", "since": None, "until": None, "limit": 10}):
        with pytest.raises(NotFound):
            rollups.buckets(store.engine, 10**9, **args)


def test_the_stats_reads_are_index_only_on_sqlite(tmp_path: Path) -> None:
    """Migration 0007: SQLite answers the stats from one index, never the table."""
    engine = build_engine(f"sqlite:///{tmp_path / 'latam.db'}", Settings(data_dir=tmp_path))
    migrate.upgrade(engine)
    span = rollups.SPAN.format(lo=rollups.SPAN_FROM, hi=rollups.SPAN_TO)
    values = {"topic": 1, "width": 3600, "lo": 0, "hi": 1, "limit": 10}
    with engine.connect() as conn:
        for sql, params in ((span, values), (rollups.TOTALS, {"width": 86400})):
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            steps = [str(row[-1]) for row in plan]
            reads = [step for step in steps if step.startswith(("SEARCH r", "SCAN r"))]
            assert reads, steps
            assert all("USING COVERING INDEX ix_rollups_reads" in step for step in reads), steps
    engine.dispose()


@sql_stores
def test_rows_stored_before_the_rollups_are_built_once(store: SqlStore) -> None:
    write_random(store, random.Random(4), ["a", "b"], 600)
    expected = all_totals(store.engine)
    with store.engine.begin() as conn:  # as if these rows predated revision 0005
        conn.execute(delete(rollups_table))
        horizon = conn.execute(select(func.max(messages.c.seq))).scalar_one()
        conn.execute(update(rollup_build).values(horizon_seq=horizon, built_to_seq=0))
    fresh = SqlStore(store.engine)
    assert rollups.build_left(store.engine) == horizon
    assert fresh.all_stats() == expected  # read from the rows while the build runs
    # Two builders at once (two workers), and a writer: each row is added once.
    errors: list[BaseException] = []

    def build() -> None:
        try:
            while rollups.build_step(store.engine, batch=37):
                pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    builders = [threading.Thread(target=build) for _ in range(2)]
    for thread in builders:
        thread.start()
    later = NewMessage("a", "after-the-migration", "{}", {}, BASE)
    for _ in range(5):
        try:
            store.write_messages([(store.topic_ids(["a"])["a"], later)])
            break
        except StoreUnavailable:
            continue  # SQLite: a builder held the write lock past the busy timeout
    for thread in builders:
        thread.join(120)
    assert not errors
    assert rollups.build_left(store.engine) is None
    assert rollups.verify(store.engine) == []
    assert fresh.all_stats() == all_totals(store.engine)


def test_a_message_another_writer_stored_meanwhile_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    """SQLite takes its write lock at the insert: a message another process stores just
    before it is ignored by the insert, counted as a duplicate, and not counted twice."""
    path = tmp_path / "store.db"
    engine = build_engine(f"sqlite:///{path}", Settings(data_dir=tmp_path))
    migrate.upgrade(engine)
    store = SqlStore(engine)
    topic = store.create_topic("a")
    message = NewMessage("a", "raced", '{"k":1}', {}, BASE)
    armed = [True]

    @event.listens_for(engine, "before_cursor_execute")
    def other_writer(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if armed[0] and statement.startswith("INSERT INTO messages"):
            armed[0] = False
            other = SqlStore(build_engine(f"sqlite:///{path}", Settings(data_dir=tmp_path)))
            other.write_messages([(topic.id, message)])
            other.close()

    batch = [(topic.id, message), (topic.id, NewMessage("a", "b", "{}"))]
    result = store.write_messages(batch)
    assert not armed[0]  # the other writer stored "raced" first
    assert (result.stored, result.duplicates) == ({"a": 1}, {"a": 1})
    assert rollups.verify(engine) == []
    again = store.write_messages(batch)
    assert (again.stored, again.duplicates) == ({"a": 0}, {"a": 2})
    assert store.count_messages(topic.id) == 2
    assert rollups.verify(engine) == []
    assert sqlite3.sqlite_version_info >= (3, 35, 4)  # INSERT … RETURNING (bulk_insert)
    store.close()


def on_the_loop(bucket: str, since: datetime | None, until: datetime | None) -> bool:
    """Whether SQLite's reader takes the range (else the store reads it in a thread): both
    ends given, whole minutes, at most ``LOOP_ROWS`` buckets."""
    if since is None or until is None:
        return False
    whole = all(at.second == at.microsecond == 0 for at in (since, until))
    return whole and (until - since).total_seconds() / BUCKET_SECONDS[bucket] <= LOOP_ROWS


def minute_range(rnd: random.Random) -> tuple[datetime, datetime]:
    """A range of whole minutes over the data (what a dashboard's aligned range is)."""
    ends = sorted(BASE + timedelta(minutes=rnd.randrange(-60, 4 * 1440)) for _ in range(2))
    return ends[0], ends[1]


END_OF_TIME = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def stats_reader(store: SqlStore) -> AsyncPgPages | SqlitePages:
    """The reader ``bootstrap.stats_reader`` gives the API on this store."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        return SqlitePages(Path(str(url.database)))
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return AsyncPgPages(conninfo, max_size=2, timeout=10)


@pytest.mark.parametrize("store", ["postgresql", "sqlite"], indirect=True)
def test_the_stats_readers_answer_as_the_store(store: SqlStore) -> None:
    """The API's stats readers (PostgreSQL's async pool, SQLite's read-only connection on
    the event loop) give the buckets the rows give (``topic_buckets``, a scan that shares
    no code with the rollups) for every range they take, totals included, and leave the
    answer to the store while the rollups are being built. SQLite's reader takes ranges
    of whole minutes of up to ``LOOP_ROWS`` buckets only."""
    write_random(store, random.Random(5), ["a", "b"], 600)
    topic = store.topic_ids(["a"])["a"]
    bounded_only = store.engine.url.get_backend_name() == "sqlite"
    reader = stats_reader(store)
    rnd = random.Random(6)
    ranges = [
        (None, None),
        (BASE, BASE + timedelta(days=2)),
        (END_OF_TIME - timedelta(microseconds=1), None),
        (END_OF_TIME - timedelta(days=1, microseconds=3), END_OF_TIME),
        *(random_range(rnd) for _ in range(20)),
        *(minute_range(rnd) for _ in range(20)),
    ]
    answered = 0

    async def compare() -> None:
        nonlocal answered
        try:
            for since, until in ranges:
                for bucket in ("hour", "day") if since is None or until is None else BUCKET_SECONDS:
                    args: dict[str, Any] = {"bucket": bucket, "since": since, "until": until}
                    found = await reader.topic_stats(topic, limit=10_001, **args)
                    if bounded_only and not on_the_loop(bucket, since, until):
                        assert found is None
                        continue
                    assert found == topic_buckets(store.engine, topic, limit=10_001, **args), args
                    answered += 1
            totals = await reader.all_stats()  # SQLite: one row per topic, in a thread
            assert totals == (None if bounded_only else all_totals(store.engine))
            with pytest.raises(NotFound):
                await reader.topic_stats(10**9, bucket="day", since=BASE, until=BASE, limit=10)
        finally:
            await reader.aclose()

    asyncio.run(compare())
    assert answered >= 40
    with store.engine.begin() as conn:  # rows the rollups do not hold yet
        conn.execute(update(rollup_build).values(horizon_seq=10**9, built_to_seq=0))
    building = stats_reader(store)

    async def while_building() -> Any:
        try:
            return await building.topic_stats(
                topic, bucket="hour", since=BASE, until=BASE + timedelta(days=1), limit=10
            )
        finally:
            await building.aclose()

    assert asyncio.run(while_building()) is None


@sql_stores
def test_ranges_at_the_end_of_year_9999_answer_from_the_rows(store: SqlStore) -> None:
    """No whole bucket starts after the last one of year 9999: a range ending there is
    read from narrower rollups and the rows, never past the largest datetime."""
    write_random(store, random.Random(8), ["a"], 200)
    topic = store.topic_ids(["a"])["a"]
    end = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    ranges = [
        (end - timedelta(microseconds=1), None),
        (end - timedelta(minutes=30, microseconds=5), end),
        (end - timedelta(days=2, microseconds=5), None),
    ]
    for since, until in ranges:
        for bucket in ("hour", "day"):
            args: dict[str, Any] = {"bucket": bucket, "since": since, "until": until}
            want = topic_buckets(store.engine, topic, limit=10_001, **args)
            assert rollups.buckets(store.engine, topic, limit=10_001, **args) == want, args


@sql_stores
def test_a_batch_over_several_insert_statements_stores_each_message_once(
    store: SqlStore,
) -> None:
    """SQLite inserts 500 rows per statement: ids already stored on both sides of each
    cut, repeats inside the batch and the same ids in another topic are each stored once,
    in the batch's order, and the rollups count exactly them."""
    a, b = store.create_topic("a").id, store.create_topic("b").id
    stored_before = [0, 499, 500, 501, 999, 1000]
    store.write_messages([(a, NewMessage("a", f"m{i}", "{}", {}, BASE)) for i in stored_before])
    batch = [(a, NewMessage("a", f"m{i}", f'{{"i":{i}}}', {}, BASE)) for i in range(1_200)]
    batch += batch[100:110]  # repeats inside the batch
    batch += [(b, NewMessage("b", f"m{i}", "{}", {}, BASE)) for i in (0, 500, 1000)]
    result = store.write_messages(batch)
    assert result.stored == {"a": 1_200 - len(stored_before), "b": 3}
    assert result.duplicates == {"a": len(stored_before) + 10, "b": 0}
    with store.engine.connect() as conn:
        ids = conn.execute(
            select(messages.c.message_id).where(messages.c.topic_id == a).order_by(messages.c.seq)
        ).scalars()
        order = [int(i.removeprefix("m")) for i in ids]
    fresh = [i for i in range(1_200) if i not in stored_before]
    assert order == stored_before + fresh
    assert store.count_messages(a) == 1_200
    assert rollups.verify(store.engine) == []
