"""The hot path of the worker: one multi-row, duplicate-ignoring INSERT per batch.

The statement is compiled once per dialect and executed straight on the driver, and the
two timestamps shared by a batch are converted once, so a 500-message batch costs one
driver call instead of a thousand type conversions (see docs/benchmarks.md).

On PostgreSQL through psycopg the batch is one statement over arrays (``unnest``): the
driver's ``executemany`` would run one INSERT per row (125 ms per 1,000 rows here, the
whole E2E bottleneck on PostgreSQL), and its ``RETURNING`` says which rows were new, so
no duplicate check is needed before it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Dialect

from latam.domain import NewMessage
from latam.storage.dialects import insert_ignoring_duplicates
from latam.storage.schema import UTCDateTime

COLUMNS = (
    "topic_id",
    "message_id",
    "data",
    "attributes",
    "size_bytes",
    "published_at",
    "ingested_at",
    "schema_version",
)
EMPTY_ATTRIBUTES = "{}"


def row(topic_id: int, m: NewMessage, published: Any, ingested: Any) -> tuple[Any, ...]:
    """A message's values in ``COLUMNS`` order, its times already in the driver's form."""
    return (
        topic_id,
        m.message_id,
        m.data,
        orjson.dumps(m.attributes).decode() if m.attributes else EMPTY_ATTRIBUTES,
        len(m.data.encode()),
        published,
        ingested,
        m.schema_version or None,  # 0: checked, no schema enforced
    )


def rows_of(
    conn: Connection, topic_id: int, batch: Iterable[NewMessage], now: datetime
) -> list[tuple[Any, ...]]:
    """The batch's rows; each distinct time converted once (a batch shares its times)."""
    convert = _time_converter(conn.dialect)
    times: dict[datetime, Any] = {}

    def when(value: datetime) -> Any:
        if value not in times:
            times[value] = convert(value)
        return times[value]

    ingested = when(now)
    return [row(topic_id, m, when(m.published_at), ingested) for m in batch]


@functools.lru_cache(maxsize=8)
def _time_converter(dialect: Dialect) -> Callable[[Any], Any]:
    """How ``dialect``'s driver takes a timestamp of ``messages`` (None: as it is)."""
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return processor or _as_is


def _as_is(value: Any) -> Any:
    return value


class BulkInsert:
    """Insert messages ignoring (topic_id, message_id) duplicates, on any dialect."""

    def __init__(self) -> None:
        self._sql: str | None = None
        self._positional = True
        self._order: tuple[str, ...] = COLUMNS

    def _prepare(self, conn: Connection) -> str:
        if self._sql is None:
            dialect = conn.dialect
            compiled = insert_ignoring_duplicates(dialect.name).compile(
                dialect=dialect, column_keys=list(COLUMNS)
            )
            self._positional = bool(compiled.positional)
            self._order = tuple(compiled.positiontup or COLUMNS)
            self._sql = str(compiled)
        return self._sql

    def __call__(
        self, conn: Connection, topic_id: int, batch: Iterable[NewMessage], now: datetime
    ) -> None:
        sql = self._prepare(conn)
        rows = rows_of(conn, topic_id, batch, now)
        if not self._positional:
            conn.exec_driver_sql(sql, [dict(zip(COLUMNS, row, strict=True)) for row in rows])
        elif self._order == COLUMNS:
            conn.exec_driver_sql(sql, rows)
        else:
            index = [COLUMNS.index(key) for key in self._order]
            conn.exec_driver_sql(sql, [tuple(row[i] for i in index) for row in rows])


# One INSERT for the whole batch, rows in the batch's order (so their seqs are too), and
# the ids of the rows actually inserted (a duplicate of a stored message is skipped). The
# arrays go in binary (``%b``): text arrays would be escaped element by element.
PG_UNNEST = (
    "INSERT INTO messages (topic_id, message_id, data, attributes, size_bytes, published_at,"
    " ingested_at, schema_version) SELECT %(topic_id)s, m, d, a, s, p, %(ingested_at)s, v"
    " FROM unnest(%(ids)b::text[], %(data)b::text[], %(attributes)b::text[],"
    " %(sizes)b::integer[], %(published)b::timestamptz[], %(versions)b::integer[])"
    " WITH ORDINALITY AS u(m, d, a, s, p, v, n) ORDER BY n"
    " ON CONFLICT (topic_id, message_id) DO NOTHING RETURNING message_id"
)


def returns_inserted(conn: Connection) -> bool:
    """Whether ``insert_returning`` works on this connection's driver."""
    name = conn.dialect.name
    return name == "sqlite" or (name == "postgresql" and conn.dialect.driver == "psycopg")


# SQLite: a multi-row INSERT whose RETURNING lists only the rows it inserted (a row that
# DO NOTHING skips returns nothing), at most this many rows per statement (8 binds a row,
# well under SQLite's 32,766).
SQLITE_ROWS = 500


def sqlite_chunks(total: int) -> Iterator[int]:
    """The row counts of the statements that insert ``total`` rows: full ones of
    ``SQLITE_ROWS``, then the rest in powers of two (437 = 256 + 128 + 32 + 16 + 4 + 1).
    The sqlite3 module keeps every statement it prepared (up to 128); one shape per row
    count would keep up to 58 MB of them in a worker, these ten keep about 1 MB."""
    while total >= SQLITE_ROWS:
        yield SQLITE_ROWS
        total -= SQLITE_ROWS
    size = 256
    while total:
        if total >= size:
            yield size
            total -= size
        size //= 2


SQLITE_INSERT = (
    "INSERT INTO messages ({columns}) VALUES {values}"
    " ON CONFLICT (topic_id, message_id) DO NOTHING RETURNING message_id"
)


@functools.lru_cache(maxsize=16)
def _sqlite_insert(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)  # placeholders only
    return SQLITE_INSERT.format(columns=", ".join(COLUMNS), values=values)


def _sqlite_returning(
    conn: Connection, topic_id: int, batch: Sequence[NewMessage], now: datetime
) -> set[str]:
    rows = rows_of(conn, topic_id, batch, now)
    inserted: set[str] = set()
    start = 0
    for count in sqlite_chunks(len(rows)):
        binds = [value for values in rows[start : start + count] for value in values]
        start += count
        result = conn.exec_driver_sql(_sqlite_insert(count), tuple(binds))
        inserted.update(result.scalars())
    return inserted


def insert_returning(
    conn: Connection, topic_id: int, batch: Sequence[NewMessage], now: datetime
) -> set[str]:
    """Insert ``batch`` ignoring duplicates, in one statement on PostgreSQL (psycopg) and
    one per ``SQLITE_ROWS`` on SQLite; the ids of the rows it inserted."""
    if conn.dialect.name == "sqlite":
        return _sqlite_returning(conn, topic_id, batch, now)
    values = {
        "topic_id": topic_id,
        "ingested_at": now,
        "ids": [m.message_id for m in batch],
        "data": [m.data for m in batch],
        "attributes": [
            orjson.dumps(m.attributes).decode() if m.attributes else EMPTY_ATTRIBUTES for m in batch
        ],
        "sizes": [len(m.data.encode()) for m in batch],
        "published": [m.published_at for m in batch],
        "versions": [m.schema_version or None for m in batch],
    }
    return set(conn.exec_driver_sql(PG_UNNEST, values).scalars())
