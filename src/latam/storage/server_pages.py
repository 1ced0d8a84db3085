"""Page readers (``storage.port.PageReader``) of PostgreSQL and MySQL/MariaDB: the database
builds the page's JSON array in one statement and the API splices it into the response.

The statement finds the page as ``Store.page_messages`` does (a probe of at most
``limit + 1`` keys on an index, cut by a running sum of their sizes at the byte budget),
joins only the kept rows to their data, and concatenates each row's stored ``data`` and
``attributes`` text, never parsed, between the other fields, in exactly the bytes
``storage.port.message_json`` renders. The same statement says whether more rows follow,
which row was last, and whether the topic exists: one round trip per page.

On PostgreSQL with psycopg the statement runs on the event loop through psycopg's async
pool (``AsyncPgPages``), with server-side prepared statements: every page shape seeks the
same index whatever its values, so the generic plan is the right one. Elsewhere
(MySQL/MariaDB, or PostgreSQL through the Cloud SQL connector's pg8000) it runs through
the store's engine in the thread pool (``EnginePages``).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from anyio import CapacityLimiter
from anyio.to_thread import run_sync
from sqlalchemy import Engine, TextClause, event, text
from sqlalchemy.exc import DBAPIError

from latam.domain import Position, window_start
from latam.errors import StoreUnavailable
from latam.storage import field_index, rollups
from latam.storage.dialects import MYSQL_NAMES, SEQ_INDEX, TIME_INDEX, translate_errors
from latam.storage.filter_sql import where_sql
from latam.storage.port import (
    LOOP_ROWS,
    STATS_VERSION,
    STATS_VERSIONS,
    Bucket,
    JsonPage,
    PageRequest,
    StatsVersion,
    Store,
    TopicTotals,
    read_rendered,
    read_stats_version,
    stats_version_of,
)
from latam.storage.timeouts import statement_timeout, too_expensive

# A read whose connection fails sooner than this after it started is tried again (the
# server had closed that connection); a later failure is the statement's own.
RETRY_WITHIN_SECONDS = 1.0
# A row as storage.port.message_json renders it. Ids are printable
# (domain.validate_message_id), so a quote and a backslash are all JSON escapes in them.
PG_ROW = (
    """'{"id":' || CAST(to_json(m.message_id) AS text) || ',"data":' || m.data"""
    """ || ',"attributes":' || m.attributes || ',"published_at":"'"""
    """ || to_char(m.published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    """ || '","ingested_at":"'"""
    """ || to_char(m.ingested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    """ || '","schema_version":' || coalesce(CAST(m.schema_version AS text), 'null') || '}'"""
)
PG_ARRAY = (
    "'[' || coalesce(string_agg({row}, ',' ORDER BY {order}) FILTER (WHERE m.kept), '') || ']'"
)
# A backslash, written so that no sql_mode (NO_BACKSLASH_ESCAPES) changes it, in the
# collation of the stored columns (a literal in another one cannot be mixed with them).
MYSQL_BACKSLASH = "CHAR(92 USING utf8mb4) COLLATE utf8mb4_bin"
MYSQL_ROW = (
    """CONCAT('{"id":"', REPLACE(REPLACE(m.message_id, {bs}, CONCAT({bs}, {bs})), '"',"""
    """ CONCAT({bs}, '"')), '","data":', m.data, ',"attributes":', m.attributes,"""
    """ ',"published_at":"', DATE_FORMAT(m.published_at, '%Y-%m-%dT%H:%i:%s.%fZ'),"""
    """ '","ingested_at":"', DATE_FORMAT(m.ingested_at, '%Y-%m-%dT%H:%i:%s.%fZ'),"""
    # COALESCE of the integer and a literal takes the literal's (coercible) collation,
    # so it mixes with the utf8mb4_bin columns; a CAST AS CHAR would be implicit, in the
    # connection's collation.
    """ '","schema_version":', COALESCE(m.schema_version, 'null'), '}')"""
).replace("{bs}", MYSQL_BACKSLASH)
MYSQL_ARRAY = "CONCAT('[', COALESCE(GROUP_CONCAT({row} ORDER BY {order} SEPARATOR ','), ''), ']')"
# GROUP_CONCAT stops silently at group_concat_max_len: a page at least that long may be
# cut and is rendered from its rows instead (only past LATAM_MAX_PAGE_BYTES near 32 MiB).
MYSQL_MAX_CONCAT = 32 * 1024 * 1024

# Built from the constants here and bound placeholders only. The topic is looked up only
# for an empty page (a 404 or an empty topic).
EXISTS = "CASE WHEN COUNT(*) > 0 THEN 1 ELSE (SELECT COUNT(*) FROM topics WHERE id = :topic) END"
# PostgreSQL reads the page in one pass, one window over the index scan: a large value
# stays a TOAST pointer until a row kept on the page is concatenated. The kept rows are a
# prefix of the probe (both conditions only turn false as it goes on).
PG_PAGE = """
SELECT {array}, COUNT(*), COUNT(*) FILTER (WHERE m.kept),
  (array_agg(m.seq ORDER BY {desc}) FILTER (WHERE m.kept))[1],
  (array_agg(m.published_at ORDER BY {desc}) FILTER (WHERE m.kept))[1], {exists}
FROM (
  SELECT *, n <= :limit AND before_row < :budget AS kept FROM (
    SELECT seq, message_id, data, attributes, published_at, ingested_at, schema_version,
      ROW_NUMBER() OVER w AS n,
      SUM(size_bytes + length(attributes)) OVER w - size_bytes - length(attributes) AS before_row
    FROM messages WHERE {scope}{where}
    WINDOW w AS (ORDER BY {order} ROWS UNBOUNDED PRECEDING)
    ORDER BY {order} LIMIT :probe
  ) AS probe
) AS m
"""
# MySQL and MariaDB are told the page's index (MariaDB otherwise picks a ref on topic_id
# and filters, see dialects.through). They compute a window over every row the WHERE
# finds before the LIMIT, and materialise a derived table with every column it holds: so
# the probe is a derived table of keys and sizes with its LIMIT, one window over it marks
# the rows kept, and only those are joined back to their data (a LEFT JOIN keeps the
# count of the others).
MYSQL_PAGE = """
SELECT {array}, COUNT(*), COUNT(m.seq), {last}, {exists}
FROM (
  SELECT seq, published_at, ROW_NUMBER() OVER (ORDER BY {order}) <= :limit
    AND SUM(row_bytes) OVER w - row_bytes < :budget AS kept
  FROM (
    SELECT seq, published_at, size_bytes + length(attributes) AS row_bytes
    FROM messages{hint} WHERE topic_id = {topic}{where}
    ORDER BY {order} LIMIT :probe
  ) AS probe
  WINDOW w AS (ORDER BY {order} ROWS UNBOUNDED PRECEDING)
) AS k LEFT JOIN messages m ON m.seq = k.seq AND k.kept
"""
# The last row kept, as "seq published_at" (naive UTC).
MYSQL_LAST = (
    "SUBSTRING_INDEX(GROUP_CONCAT(CONCAT(m.seq, ' ', DATE_FORMAT(m.published_at,"
    " '%Y-%m-%d %H:%i:%s.%f')) ORDER BY {desc} SEPARATOR ','), ',', 1)"
)
IN_INGEST_ORDER = " AND seq > :after"
# PostgreSQL's page in ingest order names its topic as a range: ``dialects.one_topic``.
PG_INGEST_SCOPE = "topic_id >= :topic AND topic_id <= :topic"
PG_INGEST_ORDER = "topic_id, seq"
SINCE = " AND published_at >= :after_time"
UNTIL = " AND published_at < :until"
PG_AFTER = " AND (published_at, seq) > (:after_time, :after)"
MYSQL_AFTER = " AND (published_at > :after_time OR (published_at = :after_time AND seq > :after))"
# SQLAlchemy's rule for a bind in text(): a colon not after a word character or a colon.
BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


# Turning a page's statement into a driver's form costs tens of microseconds a request
# (the bind regex over 1.5 KB, 36 µs; SQLAlchemy's text() parses it as much), so the
# recent ones are kept: unfiltered pages have four shapes; a filtered one names its topic
# and fields, so clients make more (the values are bound, never in the text). 128 of
# each hold well under 1 MB.
@functools.lru_cache(maxsize=128)
def pyformat(sql: str) -> str:
    """``sql`` with psycopg's ``%(name)s`` binds for SQLAlchemy's ``:name``."""
    return BIND.sub(r"%(\1)s", sql)


@functools.lru_cache(maxsize=128)
def compiled_text(sql: str) -> TextClause:
    return text(sql)


def page_statement(
    request: PageRequest, dialect: str, columns: frozenset[str] = frozenset()
) -> tuple[str, dict[str, Any]]:
    """The page's statement (with ``:name`` binds) and its values, on ``dialect``; on
    MySQL/MariaDB ``columns`` are the generated columns of indexed fields.

    A filtered page names its topic as a literal, so that the planner can use a field
    index of that topic (partial, ``storage.field_index``); the filters' values are bound.
    """
    mysql = dialect in MYSQL_NAMES
    values: dict[str, Any] = {
        "topic": request.topic_id,
        "after": request.after_seq,
        "probe": request.limit + 1,
        "limit": request.limit,
        "budget": request.max_bytes,
    }
    if not request.in_time:
        where, order = IN_INGEST_ORDER, "seq"
    else:
        order, where = "published_at, seq", ""
        start = window_start(request.since, Position(request.after_seq, request.after_time))
        if start is not None:
            values["after_time"], values["after"] = start
            # From ``since`` itself (seqs start at 1): every row at that instant.
            where = SINCE if start[1] == 0 else MYSQL_AFTER if mysql else PG_AFTER
        if request.until is not None:
            values["until"] = request.until
            where += UNTIL
    matching, bound = where_sql(request.filters, dialect, columns=columns)
    where += matching
    values.update(bound)
    if mysql:  # MySQL keeps naive UTC
        for name in ("after_time", "until"):
            if name in values:
                values[name] = values[name].astimezone(UTC).replace(tzinfo=None)
    # The kept rows' order, outside the probe (which reads no topic_id): by seq.
    m_order = ", ".join(f"m.{column}" for column in order.split(", "))
    topic = str(int(request.topic_id)) if request.filters else ":topic"
    scope = f"topic_id = {topic}"
    if not mysql and not request.in_time and not request.filters:
        # One range of (topic_id, seq), whatever the planner thinks of the primary key
        # (a filtered page keeps the equality: a partial field index needs it).
        scope, order = PG_INGEST_SCOPE, PG_INGEST_ORDER
    array = (MYSQL_ARRAY if mysql else PG_ARRAY).format(
        row=MYSQL_ROW if mysql else PG_ROW, order=m_order
    )
    page = MYSQL_PAGE if mysql else PG_PAGE
    desc = ", ".join(f"{column} DESC" for column in m_order.split(", "))
    last = MYSQL_LAST.format(desc=desc) if mysql else ""
    index = TIME_INDEX if request.in_time else SEQ_INDEX
    # A filter on an indexed field lets the optimiser choose; otherwise MariaDB is told.
    hint = "" if " lf_" in matching else f" FORCE INDEX ({index})"
    sql = page.format(
        where=where,
        order=order,
        array=array,
        exists=EXISTS,
        desc=desc,
        last=last,
        hint=hint,
        topic=topic,
        scope=scope,
    )
    return sql, values


def _page(row: Any) -> JsonPage:
    """The page of the statement's one row: (array, probed, rows, last seq, last publish
    time, topic exists), or on MySQL (array, probed, rows, "seq published_at", exists)."""
    if len(row) == 5:
        array, probed, rows, last_row, topics = row
        last_seq, last_published = None, None
        if last_row is not None:
            seq_text, published_text = last_row.split(" ", 1)
            last_seq, last_published = seq_text, datetime.fromisoformat(published_text)
    else:
        array, probed, rows, last_seq, last_published, topics = row
    last = None
    if last_seq is not None and last_published is not None:
        when: datetime = last_published
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        last = (int(last_seq), when)
    body = array.encode() if isinstance(array, str) else bytes(array)
    return JsonPage(body, last, int(probed or 0) > rows, int(rows), bool(topics))


class EnginePages:
    """Pages built by PostgreSQL or MySQL/MariaDB, read through ``engine`` in the thread
    pool, as many at a time as its pool keeps connections: more would open and close a
    connection per page (with TLS set-up, on MySQL). ``engine`` is best one made for
    single reads (``dialects.pool_options``); when ``owned``, closing the reader
    disposes of it."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        *,
        limiter: CapacityLimiter | None = None,
        owned: bool = False,
    ) -> None:
        self.store = store
        self.engine = engine
        self.owned = owned
        self.query_timeout = float(getattr(store, "query_timeout", 10.0))
        self._limiter = limiter or CapacityLimiter(5)
        self.dialect = engine.dialect.name
        if self.dialect in MYSQL_NAMES:
            _lift_concat_limit(engine)

    async def page(self, request: PageRequest, *, heavy: bool, first_try: bool = False) -> JsonPage:
        return await run_sync(self.read, request, limiter=self._limiter)

    async def aclose(self) -> None:
        if self.owned:
            self.engine.dispose()

    def read(self, request: PageRequest) -> JsonPage:
        with translate_errors():
            row = self._one(request)
        page = _page(row)
        if self.dialect in MYSQL_NAMES and len(page.array) >= MYSQL_MAX_CONCAT:
            return read_rendered(self.store, request)
        return page

    def _one(self, request: PageRequest) -> Any:
        """The page statement's row. A pooled connection is not checked before use: when
        one the server closed fails at once (a restart), SQLAlchemy drops the pool's
        connections and the read is tried once more, on a new one. A statement that ran
        for a while before its connection was lost (a read timeout) is not run again."""
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                filtered = bool(request.filters)
                columns = field_index.indexed_columns(self.engine) if filtered else frozenset()
                sql, values = page_statement(request, self.dialect, columns)
                with self.engine.connect() as conn:
                    if not filtered:
                        return conn.execute(compiled_text(sql), values).one()
                    with statement_timeout(conn, self.query_timeout):
                        return conn.execute(compiled_text(sql), values).one()
            except DBAPIError as exc:
                at_once = time.monotonic() - started < RETRY_WITHIN_SECONDS
                if attempt == 2 or not exc.connection_invalidated or not at_once:
                    raise
        raise AssertionError("unreachable")


def _lift_concat_limit(engine: Engine) -> None:
    """Every connection of ``engine`` may build a page of up to ``MYSQL_MAX_CONCAT``."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET SESSION group_concat_max_len = {MYSQL_MAX_CONCAT}")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    # Connections opened before the listener (start-up checks) are opened again.
    engine.dispose(close=False)


class AsyncPgPages:
    """Pages built by PostgreSQL, read on the event loop through psycopg's async pool
    (opened on first use, in the loop that uses it)."""

    def __init__(
        self, conninfo: str, *, max_size: int, timeout: float, query_timeout: float = 10.0
    ) -> None:
        self.conninfo = conninfo
        self.max_size = max_size
        self.timeout = timeout
        # Every page read is bounded (a filtered one may scan); unfiltered ones take ms.
        self.query_timeout = query_timeout
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()
        self._scans = self._scan_slots()
        self._built = False  # the rollups hold every row (they stay so once they do)

    def _scan_slots(self) -> asyncio.Semaphore:
        """A filtered page may scan until the query timeout, and the pool is small
        (``LATAM_DB_PAGE_CONNECTIONS``): such pages hold all but one of its connections
        at most, so that plain pages and stats are never queued behind scans."""
        return asyncio.Semaphore(max(1, self.max_size - 1))

    async def _open(self) -> Any:
        """The pool of the running loop (a process's API runs one loop; a test may run
        several, one after the other)."""
        from psycopg_pool import AsyncConnectionPool

        loop = asyncio.get_running_loop()
        if self._loop is loop and self._pool is not None:
            return self._pool
        if self._loop is not loop:
            self._pool, self._loop = None, loop
            self._opening, self._scans = asyncio.Lock(), self._scan_slots()
        async with self._opening:
            if self._pool is None:
                pool = AsyncConnectionPool(
                    self.conninfo,
                    min_size=1,
                    max_size=self.max_size,
                    timeout=self.timeout,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": 5,
                        "options": f"-c statement_timeout={int(self.query_timeout * 1000)}",
                    },
                    configure=_configure,
                    open=False,
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    async def page(self, request: PageRequest, *, heavy: bool, first_try: bool = False) -> JsonPage:
        sql, values = page_statement(request, "postgresql")
        if not request.filters:
            return _page(await self._one(pyformat(sql), values))
        await self._open()  # the slots of this loop
        async with self._scans:
            return _page(await self._one(pyformat(sql), values))

    async def rows(self, sql: str, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a short read (``:name`` binds; text columns come back as bytes)."""
        return await self._run(pyformat(sql), values, fetch_all=True)  # type: ignore[no-any-return]

    async def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket] | None:
        """The rollups' buckets as ``Store.topic_stats`` reads them; None until the
        rollups hold every row (the store reads the rows meanwhile)."""
        if not await self._rollups_built():
            return None
        return await rollups.buckets_on(
            self.rows, "postgresql", topic_id, bucket=bucket, since=since, until=until, limit=limit
        )

    async def all_stats(self) -> list[TopicTotals] | None:
        if not await self._rollups_built():
            return None
        rows = await self.rows(rollups.TOTALS, rollups.TOTALS_VALUES)  # a row per topic
        if len(rows) > LOOP_ROWS:
            return await run_sync(rollups.totals_of, rows)
        return rollups.totals_of(rows)

    async def stats_version(self, topic_id: int | None) -> StatsVersion | None:
        if not await self._rollups_built():
            return None
        if topic_id is None:  # a row per topic, as ``all_stats`` reads
            return await read_stats_version(await self.rows(STATS_VERSIONS, {}))
        return stats_version_of(await self.rows(STATS_VERSION, {"topic": topic_id}))

    async def _rollups_built(self) -> bool:
        if not self._built:
            rows = await self.rows(rollups.BUILD_LEFT, rollups.BUILD_LEFT_VALUES)
            self._built = not rows or int(rows[0][0]) <= 0
        return self._built

    async def _one(self, query: str, values: Mapping[str, Any]) -> Any:
        return await self._run(query, values, fetch_all=False)

    async def _run(self, query: str, values: Mapping[str, Any], *, fetch_all: bool) -> Any:
        """One prepared statement on the pool: its first row, or all of them."""
        import psycopg
        from psycopg_pool import PoolTimeout

        pool = await self._open()
        # A pooled connection is not checked before use (that is a round trip per read):
        # when one the server closed (a restart) fails, the idle ones are checked, the
        # closed ones dropped, and the read tried again.
        for attempt in (1, 2):
            conn = None
            try:
                async with pool.connection() as conn:
                    cursor = await conn.execute(query, values, prepare=True)
                    return await (cursor.fetchall() if fetch_all else cursor.fetchone())
            except psycopg.errors.QueryCanceled as exc:
                raise too_expensive(self.query_timeout) from exc
            except PoolTimeout as exc:  # an OperationalError: before it
                raise StoreUnavailable("no store connection was free in time") from exc
            except psycopg.OperationalError as exc:
                if attempt == 2 or conn is None or not conn.closed:
                    raise _unavailable(exc) from exc
                await pool.check()
            except (psycopg.Error, OSError) as exc:
                raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.close()
        self._pool = self._loop = None


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"the store could not be read ({type(exc).__name__})")


async def _configure(conn: Any) -> None:
    """Text arrives as bytes: the page's JSON goes into the response as it came."""
    from psycopg.adapt import Loader

    class RawText(Loader):
        def load(self, data: Any) -> bytes:
            return bytes(data)

    conn.adapters.register_loader("text", RawText)
