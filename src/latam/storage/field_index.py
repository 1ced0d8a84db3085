"""Indexes on a field of one topic's messages (``latam index create TOPIC data.flight``),
so that filters on a hot field seek instead of scanning the topic.

The index is built on exactly the expression the filters compare
(``filter_sql.value_expr``), followed by ``seq`` so that a filtered page walks it in
ingest order:

- PostgreSQL: a partial expression index ``WHERE topic_id = N``, built
  ``CONCURRENTLY`` (writes go on while it builds);
- SQLite: a partial expression index ``WHERE topic_id = N`` (the build holds the write
  lock, as any SQLite DDL does);
- MySQL/MariaDB have neither partial nor (MariaDB) expression indexes: a ``VIRTUAL``
  generated column holds the expression and an index ``(topic_id, column, seq)`` covers
  it; the filters compare the column where it exists (``indexed_columns``).

Filtered reads write the topic id as a literal (never a bound value) so the planners can
match the partial indexes. A field's index is typed: ``string`` serves string filters
(``eq.LA800``), ``number`` numeric ones (``gte.15``).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from latam.errors import Conflict, NotFound
from latam.filters import FieldPath
from latam.storage.dialects import MYSQL_NAMES
from latam.storage.filter_sql import Kind, column_name, value_expr

log = logging.getLogger("latam")

PREFIX = "ix_field_"
# MySQL/MariaDB generated columns holding an indexed field: ``lf_<digest>``.
COLUMN_PREFIX = "lf_"
NAME = re.compile(r"ix_field_[0-9]+_[0-9a-f]{10}")


@dataclass(frozen=True, slots=True)
class FieldIndex:
    """An index of a topic's field, as the database describes it."""

    name: str
    topic_id: int
    definition: str


def index_name(topic_id: int, field: FieldPath, kind: Kind) -> str:
    return f"{PREFIX}{topic_id}_{column_name(field, kind)[len(COLUMN_PREFIX) :]}"


def create(engine: Engine, topic_id: int, field: FieldPath, kind: Kind) -> str:
    """Index ``field`` of topic ``topic_id`` as ``kind``; its name. Conflict if it exists."""
    dialect = engine.dialect.name
    name = index_name(topic_id, field, kind)
    if any(index.name == name for index in list_indexes(engine)):
        raise Conflict(f"{field.name} ({kind}) of topic {topic_id} is already indexed as {name}")
    expr = value_expr(field, kind, dialect)
    if dialect in MYSQL_NAMES:
        _create_mysql(engine, name, field, kind, expr)
        return name
    where = f"WHERE topic_id = {int(topic_id)}"
    if dialect == "postgresql":
        ddl = f"CREATE INDEX CONCURRENTLY {name} ON messages (({expr}), seq) {where}"
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(ddl)
            # PostgreSQL keeps statistics of an index's expression only from the next
            # ANALYZE: until then it guesses how many rows a value matches, and where the
            # table has no statistics at all (autovacuum off, a bulk load just done) it
            # may read an unfiltered page of the topic through this partial index and
            # sort the whole topic. A sample of the table: well under a second.
            _analyze(conn)
        return name
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE INDEX {name} ON messages (({expr}), seq) {where}")
        # Without statistics SQLite takes ``topic_id = ?`` to find ten rows and walks the
        # topic in seq order rather than seek the field: it measures the table's indexes.
        conn.exec_driver_sql("ANALYZE messages")
    return name


def _analyze(conn: Connection) -> None:
    """``ANALYZE messages``, waiting at most 5 s for its lock: the index exists already,
    so a failure here is a warning (autovacuum analyzes later), not a failed create."""
    try:
        conn.exec_driver_sql("SET lock_timeout = 5000")
        conn.exec_driver_sql("ANALYZE messages")
        conn.exec_driver_sql("RESET lock_timeout")
    except DBAPIError as exc:
        log.warning("ANALYZE messages after the index build failed: %s", type(exc).__name__)


def _create_mysql(engine: Engine, name: str, field: FieldPath, kind: Kind, expr: str) -> None:
    column = column_name(field, kind)
    # Bytes, not utf8mb4_bin: that collation pads with spaces, so "a\t" < "a" in it while
    # the filters compare code points ("a" < "a\t"), and a range seek would miss rows.
    sql_type = "VARBINARY(1020)" if kind == "string" else "DOUBLE"
    with engine.begin() as conn:
        if column not in _columns(conn):
            # A string longer than the column is cut in the index only: the filter
            # compares the column, so values past 255 characters compare by their prefix.
            cut = f"CAST(LEFT({expr}, 255) AS BINARY)" if kind == "string" else expr
            # MariaDB's JSON functions stop at 32 levels with a warning, which strict
            # mode makes an error on INSERT: a deeper message of any topic could not be
            # stored. JSON_VALID says 0 there with a note only; the column is then null.
            guarded = f"CASE WHEN JSON_VALID({field.root}) THEN {cut} END"
            conn.exec_driver_sql(
                f"ALTER TABLE messages ADD COLUMN {column} {sql_type} AS ({guarded}) VIRTUAL"
            )
        conn.exec_driver_sql(f"CREATE INDEX {name} ON messages (topic_id, {column}, seq)")
    _CACHE.clear()


def drop(engine: Engine, name: str) -> None:
    """Drop a field index by name; NotFound when there is none."""
    if not NAME.fullmatch(name) or all(index.name != name for index in list_indexes(engine)):
        raise NotFound(f"no field index named {name!r} (latam index list shows them)")
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        return
    with engine.begin() as conn:
        if dialect in MYSQL_NAMES:
            conn.exec_driver_sql(f"DROP INDEX {name} ON messages")
            _drop_unused_columns(conn)
        else:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    _CACHE.clear()


def list_indexes(engine: Engine) -> list[FieldIndex]:
    """Every field index, by name."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix\\_field\\_%'"
    elif dialect in MYSQL_NAMES:
        sql = (
            "SELECT s.INDEX_NAME, c.GENERATION_EXPRESSION FROM information_schema.STATISTICS s"
            " JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA"
            " AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME"
            " WHERE s.TABLE_SCHEMA = DATABASE() AND s.TABLE_NAME = 'messages'"
            " AND s.INDEX_NAME LIKE 'ix\\_field\\_%' AND s.COLUMN_NAME LIKE 'lf\\_%'"
        )
    else:
        sql = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_field_%'"
    with engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    found = [
        FieldIndex(str(name), int(str(name).split("_")[2]), str(definition))
        for name, definition in rows
        if NAME.fullmatch(str(name))
    ]
    return sorted(found, key=lambda index: (index.topic_id, index.name))


def _columns(conn: Connection) -> set[str]:
    rows = conn.execute(
        text(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = 'messages' AND COLUMN_NAME LIKE 'lf\\_%'"
        )
    ).all()
    return {str(row[0]) for row in rows}


def _drop_unused_columns(conn: Connection) -> None:
    """Generated columns no index uses any more (every topic's index of the field gone)."""
    used = conn.execute(
        text(
            "SELECT DISTINCT COLUMN_NAME FROM information_schema.STATISTICS WHERE"
            " TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages' AND COLUMN_NAME LIKE 'lf\\_%'"
        )
    ).all()
    for column in _columns(conn) - {str(row[0]) for row in used}:
        conn.exec_driver_sql(f"ALTER TABLE messages DROP COLUMN {column}")


# The generated columns of a MySQL/MariaDB store, read at most every CACHE_SECONDS.
CACHE_SECONDS = 30.0
_CACHE: dict[int, tuple[float, frozenset[str]]] = {}


def indexed_columns(engine: Engine) -> frozenset[str]:
    """The field columns a MySQL/MariaDB store has (cached); empty elsewhere."""
    if engine.dialect.name not in MYSQL_NAMES:
        return frozenset()
    now = time.monotonic()
    cached = _CACHE.get(id(engine))
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    with engine.connect() as conn:
        columns = frozenset(_columns(conn))
    _CACHE[id(engine)] = (now, columns)
    return columns
