"""Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Insert,
    Select,
    String,
    Subquery,
    and_,
    cast,
    create_engine,
    event,
    extract,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from latam.domain import BUCKET_SECONDS
from latam.errors import (
    ConfigError,
    Conflict,
    SchemaNotCurrent,
    StoreRejected,
    StoreUnavailable,
)
from latam.settings import Settings
from latam.storage.schema import UTCDateTime, messages

MYSQL_NAMES = frozenset({"mysql", "mariadb"})
SQLITE_POOL_SIZE = 40  # the API's thread pool size (anyio's default)


def normalise_url(url: str) -> str:
    """Pick the driver latam ships for each database when the URL names none."""
    parsed = make_url(url)
    drivers = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    if parsed.drivername == "mariadb":
        parsed = parsed.set(drivername="mariadb+pymysql")
    if parsed.get_backend_name() in MYSQL_NAMES and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.render_as_string(hide_password=False)


def build_engine(url: str, settings: Settings, *, reads: bool = False) -> Engine:
    """An engine with the pool and session settings of its dialect; with ``reads``, one
    for the API's page reads of a server database (``pool_options``)."""
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, settings)
    return create_engine(
        url, connect_args=_connect_timeouts(backend), **pool_options(settings, reads=reads)
    )


def pool_options(settings: Settings, *, reads: bool = False) -> dict[str, Any]:
    """Connection-pool arguments of ``create_engine`` for a server database.

    With ``reads``, for a pool that only runs single read statements (the API's pages):
    in autocommit, with no ping before use and no rollback after it. Each of those is a
    round trip: on MariaDB a page was a ping, the statement and a rollback. A connection
    the server closed fails its statement instead, and the reader tries once more on a
    new one (``storage.server_pages.EnginePages``).
    """
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,  # connections kept open
        "max_overflow": settings.db_max_overflow,  # extra connections allowed under burst
        "pool_timeout": settings.db_pool_timeout_seconds,  # seconds to wait for a free connection
        "pool_recycle": settings.db_pool_recycle_seconds,  # seconds before a connection is reopened
        "pool_pre_ping": True,  # a restarted database costs one reconnect, not an error
    }
    if reads:
        options.update(
            pool_pre_ping=False, isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True
        )
    return options


def pool_usage(engine: Engine) -> tuple[int, int, int, int] | None:
    """(in use, idle, waiting, limit) connections of ``engine``'s queue pool, from the
    pool's own counters (None for another kind of pool)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return None
    # A checkout at the limit blocks on the pool queue's condition, and SQLAlchemy keeps
    # no count of the waiters (tests/unit/test_pool_metrics.py holds this to a real wait).
    waiting = len(getattr(getattr(pool._pool, "not_empty", None), "_waiters", ()))
    limit = pool.size() + max(pool._max_overflow, 0)
    return pool.checkedout(), pool.checkedin(), waiting, limit


def _connect_timeouts(backend: str) -> dict[str, Any]:
    if backend == "postgresql":
        # No server-side prepared statements: their generic plan for the duplicate check
        # (topic_id = $1 AND message_id IN (...500 values)) walks the whole topic instead
        # of probing the unique index, 0.5 s per batch on a 100,000-message topic.
        return {"connect_timeout": 5, "prepare_threshold": None}  # seconds
    if backend in MYSQL_NAMES:
        return {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}  # seconds
    return {}


# The worker's batch insert relies on INSERT … RETURNING listing only the rows it
# inserted (storage.bulk_insert): SQLite 3.35.0, with its RETURNING fixes of 3.35.4.
SQLITE_MINIMUM = (3, 35, 4)


def _sqlite_engine(url: str, settings: Settings) -> Engine:
    if sqlite3.sqlite_version_info < SQLITE_MINIMUM:
        raise ConfigError(
            f"the embedded store needs SQLite {'.'.join(map(str, SQLITE_MINIMUM))} or newer;"
            f" this Python's sqlite3 module uses {sqlite3.sqlite_version}"
        )
    path = make_url(url).database
    if path and path != ":memory:":
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        # One connection per API thread, kept: opening one costs pragmas and a lock.
        pool_size=SQLITE_POOL_SIZE,
        max_overflow=SQLITE_POOL_SIZE,
    )
    synchronous = settings.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Switching to WAL needs a lock; only the first connection to a new file does it.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A WAL that grew during a burst is cut back to 64 MiB at the next checkpoint.
        cursor.execute("PRAGMA journal_size_limit=67108864")
        cursor.close()

    return engine


def insert_ignoring_duplicates(dialect_name: str) -> Insert:
    """An INSERT into ``messages`` where a duplicate (topic, message id) is a no-op."""
    # The dialect's own module only when used: each costs a process megabytes.
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(messages).on_conflict_do_nothing(
            index_elements=["topic_id", "message_id"]
        )
    if dialect_name in MYSQL_NAMES:
        from sqlalchemy.dialects import mysql

        # Not INSERT IGNORE: that would also swallow truncation and other data errors.
        stmt = mysql.insert(messages)
        return stmt.on_duplicate_key_update(message_id=stmt.inserted.message_id)
    if dialect_name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(messages).on_conflict_do_nothing(
            index_elements=["topic_id", "message_id"]
        )
    return insert(messages)


TIME_INDEX = "ix_messages_topic_id_published_at_seq"
SEQ_INDEX = "ix_messages_topic_id_seq"


def through(query: Select[Any], index: str) -> Select[Any]:
    """``query`` on ``messages`` read through ``index`` on MySQL and MariaDB.

    Given ``topic_id = ?`` and a range on the next column of an index, MariaDB picks a
    ``ref`` on ``topic_id`` alone and filters the rest: a page from the middle of a
    1,000,000-message topic took 37 to 195 ms instead of 1.4 to 1.8 ms (``EXPLAIN``:
    ``ref``, key length 8, against ``range``, key length 16, with the hint). The other
    stores seek the range by themselves.
    """
    hint = f"FORCE INDEX ({index})"
    return query.with_hint(messages, hint, "mysql").with_hint(messages, hint, "mariadb")


def one_topic(topic_id: int, dialect_name: str) -> tuple[ColumnElement[bool], ...]:
    """The condition that keeps one topic's rows of ``messages`` in a read in ``seq``
    order (``by_seq``), as one range of ``(topic_id, seq)``.

    Given ``topic_id = ?``, PostgreSQL sees the primary key's order as that read's order
    too and, thinking each topic spread evenly over ``seq``, may walk the primary key and
    filter on the topic: the first page of the second of two 100,000-message topics read
    100,000 rows of the first (12 ms instead of 0.4). ``topic_id >= ? AND topic_id <= ?``
    keeps the same rows, is estimated from the column's statistics like the equality
    (a row comparison was not: it misled the planner into sorting a whole topic), and
    with ``topic_id`` in the order leaves one index that gives it. MySQL and MariaDB are
    told the index (``through``); SQLite finds it by itself.
    """
    if dialect_name == "postgresql":
        return (messages.c.topic_id >= topic_id, messages.c.topic_id <= topic_id)
    return (messages.c.topic_id == topic_id,)


def by_seq(dialect_name: str) -> tuple[ColumnElement[Any], ...]:
    """The order of one topic's rows by ``seq`` that goes with ``one_topic``."""
    if dialect_name == "postgresql":
        return (messages.c.topic_id, messages.c.seq)
    return (messages.c.seq,)


def in_ingest_order(
    query: Select[Any], topic_id: int, after_seq: int, limit: int, dialect_name: str
) -> Select[Any]:
    """``query`` (a SELECT on ``messages``) as a page in ingest order: the topic's rows
    after ``after_seq``, by ``seq``, read as one range of ``(topic_id, seq)``."""
    query = query.where(*one_topic(topic_id, dialect_name), messages.c.seq > after_seq)
    return through(query, SEQ_INDEX).order_by(*by_seq(dialect_name)).limit(limit)


def in_time_order(
    query: Select[Any],
    start: tuple[datetime, int] | None,
    until: datetime | None,
    limit: int,
    dialect_name: str,
) -> Select[Any]:
    """``query`` (a SELECT of one topic's ``messages`` rows) as a time-window page: rows
    after ``start``'s ``(published_at, seq)`` and before ``until``, in that order, read as
    index ranges of ``(topic_id, published_at, seq)`` at any position in the topic and
    however many rows share one publish time.

    PostgreSQL seeks the row-value comparison. MySQL and MariaDB turn its expanded form
    into two ranges. SQLite seeks only the first column of a row value and would walk
    every row published at the same instant as the cursor's, so it reads the two ranges
    as two seeks, merged.
    """
    published, seq = messages.c.published_at, messages.c.seq
    query = unbounded = through(query, TIME_INDEX)
    if until is not None:
        query = query.where(published < until)
    if start is None:
        return query.order_by(published, seq).limit(limit)
    when, after = literal(start[0], UTCDateTime()), start[1]
    if after == 0:  # from ``since`` itself (seqs start at 1): one plain range
        return query.where(published >= when).order_by(published, seq).limit(limit)
    if dialect_name == "sqlite":
        # ``until`` stays out of the first range: next to ``published_at =`` it made SQLite
        # walk the topic in seq order (29 ms for one row of a 100,000-row topic).
        same = unbounded.where(published == when, seq > after)
        if until is not None and start[0] >= until:
            same = same.where(false())
        same = same.order_by(seq).limit(limit)
        later = query.where(published > when).order_by(published, seq).limit(limit)
        both = union_all(select(same.subquery()), select(later.subquery())).subquery()
        return select(both).order_by(both.c.published_at, both.c.seq).limit(limit)
    if dialect_name in MYSQL_NAMES:
        later_than = or_(published > when, and_(published == when, seq > after))
    else:
        later_than = tuple_(published, seq) > tuple_(when, literal(after))
    return query.where(later_than).order_by(published, seq).limit(limit)


def within_bytes(
    probe: Subquery, columns: Sequence[ColumnElement[Any]], max_bytes: int, *, in_time: bool
) -> Select[Any]:
    """``columns`` of the rows of ``probe`` (a page's keys: ``seq``, ``published_at`` when
    ``in_time``, and ``row_bytes``) up to and including the one that brings their bytes
    to ``max_bytes``, in the page's order, each with the number of rows the probe found
    (``probed``, last column).

    The running sum is a window over the probe's few rows (the probe has its LIMIT), and
    only the rows kept are joined back to ``messages`` for their data: a large message
    past the budget is never read, on a store that materialises the probe too (MariaDB,
    SQLite).
    """
    order = [probe.c.published_at, probe.c.seq] if in_time else [probe.c.seq]
    running = func.sum(probe.c.row_bytes).over(order_by=order, rows=(None, 0))
    sized = select(
        probe.c.seq,
        probe.c.row_bytes,
        running.label("running"),
        func.count().over().label("probed"),
    ).subquery()
    kept = (
        select(sized.c.seq, sized.c.probed)
        .where(sized.c.running - sized.c.row_bytes < max_bytes)
        .subquery()
    )
    order_by = [messages.c.published_at, messages.c.seq] if in_time else [messages.c.seq]
    return (
        select(*columns, kept.c.probed)
        .join_from(kept, messages, messages.c.seq == kept.c.seq)
        .order_by(*order_by)
    )


def bucket_start(column: Any, bucket: str, dialect_name: str) -> ColumnElement[int]:
    """The start of ``column``'s bucket as whole seconds since 1970-01-01 UTC.

    Integer epoch arithmetic gives the same buckets on every store and never consults a
    session time zone. The width is rendered as a literal so that the SELECT and the
    GROUP BY expressions are textually identical, as PostgreSQL and MySQL require.
    """
    width = literal_column(str(BUCKET_SECONDS[bucket]), BigInteger)
    epoch: ColumnElement[Any]
    if dialect_name == "postgresql":
        # EXTRACT(EPOCH FROM timestamptz) is absolute: independent of the TimeZone setting.
        epoch = cast(func.floor(extract("epoch", column)), BigInteger)
    elif dialect_name in MYSQL_NAMES:
        # Not UNIX_TIMESTAMP(): it reads the naive UTC DATETIME in the session time zone.
        # Microseconds, then floored: whole SECONDs truncate toward zero before 1970.
        origin = literal_column("'1970-01-01 00:00:00'", String)
        micros = func.timestampdiff(literal_column("MICROSECOND"), origin, column)
        epoch = cast(func.floor(micros / literal_column("1000000")), BigInteger)
    else:
        # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' text. Its date functions round to the
        # millisecond (59.9999996 s would become the next minute), so cut at whole seconds.
        epoch = cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger)
    # Floored, also before 1970 (SQL's % keeps the sign of the dividend), as rollups floor.
    return type_coerce(epoch - (epoch % width + width) % width, BigInteger)


# How each database says a table or a column is missing: the schema is not migrated.
MISSING_SQLSTATES = frozenset({"42P01", "42703"})  # PostgreSQL: undefined table, column
MISSING_MYSQL_CODES = frozenset({1146, 1054})  # MySQL/MariaDB: no such table, unknown column
MISSING_SQLITE_TEXT = ("no such table", "no such column")


@functools.lru_cache(maxsize=256)
def _driver_sql(dialect: Dialect, sql: str) -> tuple[str, tuple[str, ...] | None]:
    """``sql`` (``:name`` binds) in the driver's parameter style, and for a positional
    style the order of its binds."""
    compiled = text(sql).compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ()) if compiled.positional else None


def driver_rows(conn: Connection, sql: str, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of a hot read as the driver returns them (plain tuples).

    SQLAlchemy still executes and fetches (its errors, disconnect handling and events
    apply: the result's fetch strategy is what ``Result.all`` calls before it wraps each
    row), but neither compiles the statement nor wraps the rows: for the 720 buckets of a
    month of hourly stats that halves the read (0.62 to 0.33 ms on SQLite). Binds get
    no type processing, so ``values`` may hold only what every driver takes as is
    (integers and strings: no datetimes, which SQLite stores as text).
    """
    statement, order = _driver_sql(conn.dialect, sql)
    params: Any = dict(values) if order is None else tuple(values[name] for name in order)
    result = conn.exec_driver_sql(statement, params)
    try:
        return list(result.cursor_strategy.fetchall(result, result.cursor))
    finally:
        result.close()


def is_missing_schema(exc: DBAPIError) -> bool:
    """Whether the database refused because a table or column latam uses is missing."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in MISSING_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in MISSING_MYSQL_CODES:
        return True
    return str(orig).startswith(MISSING_SQLITE_TEXT)


# Errors that say the data can never be written, whatever the retries: MySQL/MariaDB codes
# (pymysql reports several of them as OperationalError). Bad value, too long, out of
# range, invalid JSON, a packet over max_allowed_packet.
MYSQL_REJECTED_CODES = frozenset({1048, 1153, 1264, 1292, 1301, 1366, 1406, 3140})


def is_rejected(exc: DBAPIError) -> bool:
    """Whether the database refused the data itself (retrying cannot help)."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    args: tuple[object, ...] = getattr(exc.orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in MYSQL_REJECTED_CODES


def cause(exc: DBAPIError) -> str:
    """The driver's own message, first line and bounded: for logs and dead letters."""
    text = str(exc.orig).strip().splitlines()
    return f"{type(exc.orig).__name__}: {(text[0] if text else '')[:300]}"


@contextmanager
def translate_errors(
    *, conflict: str | None = None, schema: Callable[[], str] | None = None
) -> Iterator[None]:
    """Re-raise driver errors as latam's own.

    A duplicate where ``conflict`` is given → Conflict; data the database refuses →
    StoreRejected (permanent); a missing table or column → SchemaNotCurrent when
    ``schema`` says why (``migrate.schema_problem``); connection, timeout, deadlock,
    serialization and anything else → StoreUnavailable (transient). Details carry the
    driver's message for logs and dead letters; the API shows only generic text.
    """
    try:
        yield
    except DBAPIError as exc:
        if conflict is not None and isinstance(exc, IntegrityError):
            raise Conflict(conflict) from exc
        if schema is not None and is_missing_schema(exc):
            raise SchemaNotCurrent(schema()) from exc
        if is_rejected(exc):
            raise StoreRejected(f"the store rejected the data: {cause(exc)}") from exc
        raise StoreUnavailable(f"the store is unavailable: {cause(exc)}") from exc
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"the store failed the operation: {type(exc).__name__}") from exc
