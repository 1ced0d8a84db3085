"""Rollups: counts, bytes and first/last publish time per topic and time bucket, kept
with the writes so that the stats endpoints never scan ``messages``.

- ``add`` runs in the transaction that inserts a batch, with exactly the rows that
  transaction inserted (``SqlStore.write_messages``), so a redelivered or replayed message,
  which the insert ignores, is never counted twice, and a batch that rolls back leaves no
  trace. It and ``remove`` raise the topic's ``stats_version`` in that transaction.
- Rows stored before the table existed are added by ``build_step`` in bounded batches
  (the worker runs it in the background); until it is done the stats read the rows.
- ``buckets`` answers any ``since``/``until`` range exactly: whole buckets from the
  widest rollup that fits, the ragged edges from narrower ones, and less than a minute at
  each end from the rows themselves (one range of the ``published_at`` index).
- ``verify`` recomputes every figure from the rows and lists each difference.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio.to_thread import run_sync
from sqlalchemy import Connection, Engine, Insert, Select, bindparam, delete, func, select, update

from latam.domain import BUCKET_SECONDS, NewMessage
from latam.errors import NotFound
from latam.storage.dialects import (
    MYSQL_NAMES,
    TIME_INDEX,
    bucket_start,
    by_seq,
    driver_rows,
    one_topic,
    through,
    translate_errors,
)
from latam.storage.port import LOOP_ROWS, Bucket, TopicTotals
from latam.storage.schema import UTCDateTime, messages, rollup_build, rollups, topics

WIDTHS = tuple(sorted(BUCKET_SECONDS.values()))  # 60, 3600, 86400
# Runs a statement (``:name`` binds) on an async reader and returns its rows.
Fetch = Callable[[str, Mapping[str, Any]], Awaitable[Sequence[Sequence[Any]]]]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)
BUILD_ID = 1
BUILD_BATCH = 20_000  # rows per transaction of the background build


def micros(at: datetime) -> int:
    return (at - EPOCH) // MICRO


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


Key = tuple[int, int]  # (width, bucket start)
Figures = list[int]  # [messages, bytes, first µs, last µs]


def tally(rows: Iterable[tuple[datetime, int]]) -> dict[Key, Figures]:
    """Rollup figures of ``(published_at, size in bytes)`` rows, per width and bucket.
    A batch shares a few publish times, so each distinct one is converted once."""
    per_instant: dict[datetime, list[int]] = {}
    for at, size in rows:
        seen = per_instant.get(at)
        if seen is None:
            per_instant[at] = [1, size]
        else:
            seen[0] += 1
            seen[1] += size
    figures: dict[Key, Figures] = {}
    for at, (count, size) in per_instant.items():
        us = micros(at)
        second = us // 1_000_000
        for width in WIDTHS:
            _merge(figures, (width, second - second % width), [count, size, us, us])  # floored
    return figures


def _merge(figures: dict[Any, Figures], key: Hashable, more: Figures) -> None:
    """Add ``more`` to the figures of ``key``: counts and bytes add, times widen."""
    fig = figures.get(key)
    if fig is None:
        figures[key] = list(more)
        return
    fig[0] += more[0]
    fig[1] += more[1]
    fig[2] = min(fig[2], more[2])
    fig[3] = max(fig[3], more[3])


def _by_topic(rows: Iterable[Any]) -> dict[int, list[tuple[datetime, int]]]:
    """``(topic_id, published_at, size_bytes)`` rows as each topic's (time, size) pairs."""
    per_topic: dict[int, list[tuple[datetime, int]]] = {}
    for topic_id, at, size in rows:
        per_topic.setdefault(topic_id, []).append((at, size))
    return per_topic


@functools.cache
def _upsert(dialect_name: str) -> Insert:
    """Add to a rollup row, creating it when missing."""
    count, size = rollups.c.message_count, rollups.c.byte_count
    first, last = rollups.c.first_published, rollups.c.last_published
    if dialect_name in MYSQL_NAMES:
        from sqlalchemy.dialects import mysql

        stmt = mysql.insert(rollups)
        new = stmt.inserted
        return stmt.on_duplicate_key_update(
            message_count=count + new.message_count,
            byte_count=size + new.byte_count,
            first_published=func.least(first, new.first_published),
            last_published=func.greatest(last, new.last_published),
        )
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql

        pg = postgresql.insert(rollups)
        least, greatest, pg_new = func.least, func.greatest, pg.excluded
        return pg.on_conflict_do_update(
            index_elements=["topic_id", "width", "bucket_start"],
            set_={
                "message_count": count + pg_new.message_count,
                "byte_count": size + pg_new.byte_count,
                "first_published": least(first, pg_new.first_published),
                "last_published": greatest(last, pg_new.last_published),
            },
        )
    from sqlalchemy.dialects import sqlite

    lite = sqlite.insert(rollups)
    lite_new = lite.excluded
    # SQLite's min() and max() with two arguments are the scalar least and greatest.
    return lite.on_conflict_do_update(
        index_elements=["topic_id", "width", "bucket_start"],
        set_={
            "message_count": count + lite_new.message_count,
            "byte_count": size + lite_new.byte_count,
            "first_published": func.min(first, lite_new.first_published),
            "last_published": func.max(last, lite_new.last_published),
        },
    )


def _write(conn: Connection, topic_id: int, figures: dict[Key, Figures]) -> None:
    if figures:
        conn.execute(
            _upsert(conn.dialect.name),
            [
                {
                    "topic_id": topic_id,
                    "width": width,
                    "bucket_start": start,
                    "message_count": count,
                    "byte_count": size,
                    "first_published": first,
                    "last_published": last,
                }
                for (width, start), (count, size, first, last) in figures.items()
            ],
        )


def add(conn: Connection, inserted: Mapping[int, Iterable[NewMessage]]) -> None:
    """Count rows the caller's transaction inserted, per topic (sizes as ``size_bytes``
    stores them), and raise those topics' stats versions."""
    for topic_id, rows in inserted.items():
        _write(conn, topic_id, tally((m.published_at, len(m.data.encode())) for m in rows))
    touch(conn, list(inserted))


def touch(conn: Connection, topic_ids: Sequence[int]) -> None:
    """Raise ``topics.stats_version`` of ``topic_ids`` in the caller's transaction: every
    change to a topic's rollups (or its name) does, so that a stats answer kept with the
    version it was read at (``service.StatsCache``) is reused only while it is exact."""
    if topic_ids:
        bump = topics.c.stats_version + 1
        conn.execute(update(topics).where(topics.c.id.in_(topic_ids)).values(stats_version=bump))


def remove(conn: Connection, topic_id: int, deleted: Iterable[tuple[datetime, int]]) -> None:
    """Take rows the caller's transaction deleted, as ``(published_at, size_bytes)``,
    out of the topic's rollups: counts and bytes go down, a bucket left empty goes, and a
    bucket left with rows gets its first and last publish times again from those rows
    (retention deletes the oldest rows, so that is at most one bucket per width, read as
    one range of the ``published_at`` index)."""
    figures = tally(deleted)
    if not figures:
        return
    touch(conn, [topic_id])
    where = (
        rollups.c.topic_id == topic_id,
        rollups.c.width == bindparam("w"),
        rollups.c.bucket_start == bindparam("s"),
    )
    less = update(rollups).where(*where)
    less = less.values(
        message_count=rollups.c.message_count - bindparam("c"),
        byte_count=rollups.c.byte_count - bindparam("b"),
    )
    conn.execute(
        less,
        [{"w": w, "s": start, "c": fig[0], "b": fig[1]} for (w, start), fig in figures.items()],
    )
    conn.execute(
        delete(rollups).where(rollups.c.topic_id == topic_id, rollups.c.message_count <= 0)
    )
    for width in WIDTHS:
        starts = [start for w, start in figures if w == width]
        left = select(rollups.c.bucket_start).where(
            rollups.c.topic_id == topic_id,
            rollups.c.width == width,
            rollups.c.bucket_start.between(min(starts), max(starts)),
        )
        for start in conn.execute(left).scalars().all():
            _narrow(conn, topic_id, width, int(start))


def _narrow(conn: Connection, topic_id: int, width: int, start: int) -> None:
    """Set a bucket's first and last publish times from its rows."""
    lo = from_micros(start * 1_000_000)
    span = select(func.min(messages.c.published_at), func.max(messages.c.published_at)).where(
        messages.c.topic_id == topic_id,
        messages.c.published_at >= lo,
        messages.c.published_at < lo + timedelta(seconds=width),
    )
    first, last = conn.execute(through(span, TIME_INDEX)).one()
    if first is None:
        return
    conn.execute(
        update(rollups)
        .where(
            rollups.c.topic_id == topic_id,
            rollups.c.width == width,
            rollups.c.bucket_start == start,
        )
        .values(first_published=micros(_aware(first)), last_published=micros(_aware(last)))
    )


def _aware(at: datetime) -> datetime:
    """An aggregate of a typed column comes back as the column's type on most drivers."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


# -- the build of rows stored before the rollups existed -------------------------------
def build_left(engine: Engine) -> int | None:
    """Rows of the build still to add (their seqs span this many), None when none."""
    with translate_errors(), engine.connect() as conn:
        row = conn.execute(select(rollup_build).where(rollup_build.c.id == BUILD_ID)).first()
    if row is None or row.built_to_seq >= row.horizon_seq:
        return None
    return int(row.horizon_seq - row.built_to_seq)


def build_step(engine: Engine, batch: int = BUILD_BATCH) -> bool:
    """Add the next ``batch`` seqs of old rows; False once there is nothing left.

    Several processes may run it at once: the step whose marker update finds the marker
    already moved rolls back, so each row is added once.
    """
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(select(rollup_build).where(rollup_build.c.id == BUILD_ID)).first()
        if row is None or row.built_to_seq >= row.horizon_seq:
            return False
        start, end = int(row.built_to_seq), min(int(row.built_to_seq) + batch, row.horizon_seq)
        query = select(messages.c.topic_id, messages.c.published_at, messages.c.size_bytes).where(
            messages.c.seq > start, messages.c.seq <= end
        )
        per_topic = _by_topic(conn.execute(query))
        moved = conn.execute(
            update(rollup_build)
            .where(rollup_build.c.id == BUILD_ID, rollup_build.c.built_to_seq == start)
            .values(built_to_seq=end)
        )
        if moved.rowcount != 1:
            conn.rollback()  # another process took this batch
            return True
        for topic_id, rows in per_topic.items():
            _write(conn, topic_id, tally(rows))
    return bool(end < row.horizon_seq)


# -- reads ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Span:
    """``[lo, hi)`` in seconds or, for the ragged ends, in datetimes; None is open."""

    width: int  # 0: the rows themselves
    lo: datetime | None
    hi: datetime | None


def _cover(lo: datetime | None, hi: datetime | None, widths: Sequence[int]) -> list[_Span]:
    """Split ``[lo, hi)`` into spans each read from one width (widest in the middle)."""
    if not widths:
        return [] if lo is not None and hi is not None and lo >= hi else [_Span(0, lo, hi)]
    width = widths[-1]
    if lo is not None and _no_whole_bucket_after(lo, width):
        return _cover(lo, hi, widths[:-1])
    inner_lo = None if lo is None else _ceil(lo, width)
    inner_hi = None if hi is None else _floor(hi, width)
    if inner_lo is not None and inner_hi is not None and inner_lo >= inner_hi:
        return _cover(lo, hi, widths[:-1])
    spans = [_Span(width, inner_lo, inner_hi)]
    if lo is not None and inner_lo is not None and lo < inner_lo:
        spans += _cover(lo, inner_lo, widths[:-1])
    if hi is not None and inner_hi is not None and inner_hi < hi:
        spans += _cover(inner_hi, hi, widths[:-1])
    return spans


def _floor(at: datetime, width: int) -> datetime:
    second = micros(at) // 1_000_000
    return from_micros((second - second % width) * 1_000_000)


def _ceil(at: datetime, width: int) -> datetime:
    floor = _floor(at, width)
    return floor if floor == at else floor + timedelta(seconds=width)


LATEST = datetime.max.replace(tzinfo=UTC)


def _no_whole_bucket_after(at: datetime, width: int) -> bool:
    """Whether ``at`` is inside the last bucket of year 9999, past its start (no whole
    bucket of ``width`` starts after it: narrower widths and the rows cover the rest)."""
    floor = _floor(at, width)
    return floor != at and floor > LATEST - timedelta(seconds=width)


def buckets(
    engine: Engine,
    topic_id: int,
    *,
    bucket: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[Bucket]:
    """Non-empty buckets of a topic in time order, at most ``limit``, from the rollups;
    NotFound when there is no such topic. Rollup rows go with their topic (a foreign key
    that cascades), so the topic is looked up only when the range has none."""
    width, spans = plan(bucket, since, until)
    with translate_errors(), engine.connect() as conn:
        results = [_span_rows(conn, span, topic_id, limit) for span in spans]
        if not any(results) and not driver_rows(conn, TOPIC, {"topic": topic_id}):
            raise NotFound(f"topic {topic_id} does not exist")
    return combine(results, spans, width, limit)


async def buckets_on(
    fetch: Fetch,
    dialect_name: str,
    topic_id: int,
    *,
    bucket: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[Bucket]:
    """``buckets`` read through ``fetch`` (a page reader's own connections): the same
    statements, the same answer."""
    width, spans = plan(bucket, since, until)
    statements = [span_statement(span, topic_id, limit, dialect_name) for span in spans]
    results = [await fetch(sql, values) for sql, values in statements]
    if not any(results) and not await fetch(TOPIC, {"topic": topic_id}):
        raise NotFound(f"topic {topic_id} does not exist")
    if sum(len(rows) for rows in results) > LOOP_ROWS:  # up to 10,001: not on the loop
        return await run_sync(combine, results, spans, width, limit)
    return combine(results, spans, width, limit)


def plan(bucket: str, since: datetime | None, until: datetime | None) -> tuple[int, list[_Span]]:
    """The bucket width in seconds and the spans that cover ``[since, until)``."""
    width = BUCKET_SECONDS[bucket]
    return width, _cover(since, until, [w for w in WIDTHS if w <= width])


def combine(
    results: Sequence[Sequence[Any]], spans: Sequence[_Span], width: int, limit: int
) -> list[Bucket]:
    """The buckets of ``width`` from the ``(start, messages, bytes)`` rows of each span."""
    if len(results) == 1 and spans[0].width == width:  # whole buckets only: as read
        return [Bucket(_start(start), count, size) for start, count, size in results[0][:limit]]
    counts: dict[int, list[int]] = {}
    for rows in results:
        for start, count, size in rows:
            fig = counts.setdefault(int(start) - int(start) % width, [0, 0])
            fig[0] += int(count)
            fig[1] += int(size)
    return [_bucket(key, count, size) for key, (count, size) in sorted(counts.items()) if count][
        :limit
    ]


def _bucket(start: int, count: int, size: int) -> Bucket:
    return Bucket(_start(start), count, size)


@functools.lru_cache(maxsize=65_536)
def _start(seconds: int) -> datetime:
    """Bucket starts repeat from call to call (dashboards poll the same ranges)."""
    return datetime.fromtimestamp(seconds, tz=UTC)


@functools.lru_cache(maxsize=65_536)
def _instant(us: int) -> datetime:
    """First and last publish times of a topic repeat from one ``/v1/stats`` to the next."""
    return from_micros(us)


# The hot reads, as text run by the driver (``dialects.driver_rows``): the statements are
# fixed, their binds are integers, and they read rows of three or six plain columns.
# A wider rollup row never splits across two buckets, so ``limit`` rows are enough.
SPAN = (
    "SELECT bucket_start, message_count, byte_count FROM rollups"
    " WHERE topic_id = :topic AND width = :width{lo}{hi} ORDER BY bucket_start LIMIT :limit"
)
TOPIC = "SELECT 1 FROM topics WHERE id = :topic"
SPAN_FROM = " AND bucket_start >= :lo"
SPAN_TO = " AND bucket_start < :hi"
# Driven by the topics: one index range per topic, whatever the minute rollups hold.
TOTALS = (
    "SELECT t.id, t.name, SUM(r.message_count), SUM(r.byte_count), MIN(r.first_published),"
    " MAX(r.last_published) FROM topics t"
    " LEFT JOIN rollups r ON r.topic_id = t.id AND r.width = :width"
    " GROUP BY t.id, t.name ORDER BY t.id"
)
TOTALS_VALUES = {"width": WIDTHS[-1]}
# How many seqs of rows stored before the rollups existed are still to add (no row: none).
BUILD_LEFT = "SELECT horizon_seq - built_to_seq FROM rollup_build WHERE id = :id"
BUILD_LEFT_VALUES = {"id": BUILD_ID}


def _span_rows(conn: Connection, span: _Span, topic_id: int, limit: int) -> Sequence[Any]:
    """``(bucket start in seconds, messages, bytes)`` rows of one span."""
    if span.width == 0:
        return conn.execute(_raw_span(span, topic_id, conn.dialect.name)).all()
    return driver_rows(conn, *span_statement(span, topic_id, limit, conn.dialect.name))


def span_statement(
    span: _Span, topic_id: int, limit: int, dialect_name: str
) -> tuple[str, dict[str, Any]]:
    """The statement and values of one span, on ``dialect_name``: ``:name`` binds, but
    ``%(name)s`` ones for the rows themselves on PostgreSQL."""
    if span.width == 0:  # a reader without SQLAlchemy: the text of the SQLAlchemy query
        sql, fixed = _raw_span_sql(dialect_name, span.lo is not None, span.hi is not None)
        values = {"topic": topic_id, **dict(fixed)}
        for name, at in (("lo", span.lo), ("hi", span.hi)):
            if at is not None:
                values[name] = _bound_time(dialect_name, at)
        return sql, values
    values = {"topic": topic_id, "width": span.width, "limit": limit + 1}
    if span.lo is not None:
        values["lo"] = micros(span.lo) // 1_000_000
    if span.hi is not None:
        values["hi"] = micros(span.hi) // 1_000_000
    sql = SPAN.format(lo=SPAN_FROM if "lo" in values else "", hi=SPAN_TO if "hi" in values else "")
    return sql, values


def _raw_span(span: _Span, topic_id: int, dialect_name: str) -> Select[Any]:
    """Less than a minute at an end of the range: the rows themselves, by minute."""
    start = bucket_start(messages.c.published_at, "minute", dialect_name).label("start")
    raw = select(start, func.count(), func.coalesce(func.sum(messages.c.size_bytes), 0))
    raw = through(raw.where(messages.c.topic_id == bindparam("topic")), TIME_INDEX)
    if span.lo is not None:
        raw = raw.where(messages.c.published_at >= bindparam("lo", span.lo))
    if span.hi is not None:
        raw = raw.where(messages.c.published_at < bindparam("hi", span.hi))
    return raw.group_by(start).params(topic=topic_id)


@functools.lru_cache(maxsize=8)
def _raw_span_sql(dialect_name: str, lo: bool, hi: bool) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``_raw_span`` as text and its fixed values, for a reader without SQLAlchemy:
    PostgreSQL's with ``%(name)s`` binds, SQLite's with ``:name`` ones."""
    anchor = datetime(2000, 1, 1, tzinfo=UTC)
    span = _Span(0, anchor if lo else None, anchor if hi else None)
    compiled = _raw_span(span, 0, dialect_name).compile(dialect=_text_dialect(dialect_name))
    fixed = tuple((k, v) for k, v in compiled.params.items() if k not in {"topic", "lo", "hi"})
    return str(compiled), fixed


@functools.lru_cache(maxsize=2)
def _text_dialect(dialect_name: str) -> Any:
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.dialect()  # type: ignore[no-untyped-call]
    if dialect_name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.dialect(paramstyle="named")
    raise ValueError(f"no text form of the raw span on {dialect_name}")


def _bound_time(dialect_name: str, value: datetime) -> Any:
    """``value`` as the store keeps it (SQLite: naive UTC text)."""
    dialect = _text_dialect(dialect_name)
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


def totals(engine: Engine) -> list[TopicTotals]:
    """Count, bytes and first/last publish time of every topic, from the day rollups."""
    with translate_errors(), engine.connect() as conn:
        return totals_of(driver_rows(conn, TOTALS, TOTALS_VALUES))


def totals_of(rows: Iterable[Sequence[Any]]) -> list[TopicTotals]:
    """``TopicTotals`` from the rows of ``TOTALS`` (a name read as bytes is decoded)."""
    return [
        TopicTotals(
            topic_id,
            name.decode() if isinstance(name, bytes) else name,
            int(count or 0),  # a SUM is a DECIMAL on MySQL
            int(size or 0),
            None if first is None else _instant(int(first)),
            None if last is None else _instant(int(last)),
        )
        for topic_id, name, count, size, first, last in rows
    ]


# -- verification -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Difference:
    topic_id: int
    width: int
    start: int
    rollup: tuple[int, ...] | None  # (messages, bytes, first µs, last µs); None: no row
    rows: tuple[int, ...] | None  # the same figures recomputed from the rows

    def __str__(self) -> str:
        at = datetime.fromtimestamp(self.start, tz=UTC).isoformat()
        return (
            f"topic {self.topic_id}, {self.width}-second bucket at {at}: rollup {self.rollup}"
            f" but the rows say {self.rows}"
        )


def verify(engine: Engine, topic_id: int | None = None, batch: int = 50_000) -> list[Difference]:
    """Recompute every rollup of one topic (or all) from the rows; the differences."""
    expected: dict[tuple[int, int, int], Figures] = {}
    after = 0
    with translate_errors(), engine.connect() as conn:
        while True:
            query = select(
                messages.c.seq, messages.c.topic_id, messages.c.published_at, messages.c.size_bytes
            ).where(messages.c.seq > after)
            order: tuple[Any, ...] = (messages.c.seq,)
            if topic_id is not None:  # one range of (topic_id, seq)
                query = query.where(*one_topic(topic_id, conn.dialect.name))
                order = by_seq(conn.dialect.name)
            chunk = conn.execute(query.order_by(*order).limit(batch)).all()
            if not chunk:
                break
            after = chunk[-1].seq
            for tid, rows in _by_topic(row[1:] for row in chunk).items():
                for (width, start), fig in tally(rows).items():
                    _merge(expected, (tid, width, start), fig)
        stored_query = select(rollups)
        if topic_id is not None:
            stored_query = stored_query.where(rollups.c.topic_id == topic_id)
        stored = {
            (r.topic_id, r.width, r.bucket_start): (
                int(r.message_count),
                int(r.byte_count),
                int(r.first_published),
                int(r.last_published),
            )
            for r in conn.execute(stored_query)
        }
    differences = []
    for key in sorted(set(expected) | set(stored)):
        want = tuple(expected[key]) if key in expected else None
        have = stored.get(key)
        if want != have:
            differences.append(Difference(key[0], key[1], key[2], have, want))
    return differences
