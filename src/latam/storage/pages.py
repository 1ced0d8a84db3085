"""The page reader (``storage.port.PageReader``) of the embedded SQLite store: pages of
messages rendered straight to JSON bytes.

The read path is the hottest one of the API, so on SQLite it skips every layer it can:
one indexed statement on a read-only connection of the calling thread, rows fetched as
bytes (``text_factory=bytes``), and the stored JSON of ``data`` and ``attributes``
spliced into the response without being parsed. The worker stored that text only after
``orjson`` accepted it, so it is valid JSON. The shape is exactly the one
``api.render.message_json`` produces for the other stores.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator, Mapping
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anyio.to_thread import run_sync

from latam.domain import BUCKET_SECONDS, Position, window_start
from latam.errors import StoreUnavailable
from latam.storage import rollups
from latam.storage.filter_sql import where_sql
from latam.storage.port import (
    LOOP_ROWS,
    STATS_VERSION,
    STATS_VERSIONS,
    Bucket,
    JsonPage,
    PageRequest,
    StatsVersion,
    TopicTotals,
    read_stats_version,
    stats_version_of,
)
from latam.storage.timeouts import sqlite_deadline

# A page is one statement (two after a cursor in publish-time order): the rows in page
# order, each with its size (the last column of both page indexes on SQLite, migration
# 0006), stepped through until ``limit`` rows or the byte budget, and one row more, which
# says whether more follow; the statement is dropped there, and nothing is sorted with
# its data. So a page reads at most one row past itself, whole: at most
# ``LATAM_MAX_MESSAGE_BYTES`` more (the probe of keys this replaced read none, and cost a
# second statement per page). On the event loop (``light``), a row bigger than the whole
# budget comes back without its data (``data`` is the only column a message can make
# big), and the page is read again in a thread; SQLite still walks that row's overflow
# pages in its page cache to reach the columns stored after ``data``.
COLUMNS = (
    "SELECT seq, published_at, size_bytes + length(attributes) AS row_bytes, message_id,"
    " CASE WHEN size_bytes + length(attributes) > :cap THEN NULL ELSE data END,"
    " attributes, ingested_at, schema_version FROM messages WHERE topic_id = :topic"
)
IN_INGEST_ORDER = " AND seq > :after ORDER BY seq LIMIT :probe"
# Publish-time order (domain.Position), as storage.dialects.in_time_order reads it.
SINCE = " AND published_at >= :after_time"
UNTIL = " AND published_at < :until"
IN_TIME_ORDER = " ORDER BY published_at, seq LIMIT :probe"
# After a cursor in publish-time order: the rest of the cursor's instant, then what
# follows, as two statements read one after the other (each in the page's order, so
# nothing is sorted with its data). The first states the window's upper bound on the
# parameters alone: written on the column next to ``published_at =``, it made SQLite
# walk the topic in seq order (29 ms for one row of a 100,000-row topic).
REST_OF_INSTANT = " AND published_at = :after_time AND seq > :after{at} ORDER BY seq LIMIT :probe"
UNTIL_AT = " AND :after_time < :until"
AFTER_INSTANT = " AND published_at > :after_time"
# Each kept row as the JSON object storage.port.message_json renders, from the stored
# text (nothing parsed). Ids are printable (domain.validate_message_id), so a quote and
# a backslash are all JSON escapes in them; timestamps are stored as naive UTC text,
# "YYYY-MM-DD HH:MM:SS.ffffff".
ROW = (
    b'{"id":"%s","data":%s,"attributes":%s,"published_at":"%sT%sZ",'
    b'"ingested_at":"%sT%sZ","schema_version":%s}'
)
TOPIC = "SELECT 1 FROM topics WHERE id = ?"
MAX_INT64 = 2**63 - 1  # no cap


def _stored(value: datetime) -> str:
    """A bound timestamp in the text form SQLAlchemy stores (naive UTC, microseconds)."""
    # isoformat, not strftime: "%Y" does not pad years before 1000 to four digits.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class SqlitePages:
    """Reads pages of one SQLite database file, one read-only connection per thread."""

    def __init__(self, path: Path, *, query_timeout: float = 10.0) -> None:
        self.uri = f"{path.resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        self.query_timeout = query_timeout
        self._built = False  # the rollups hold every row (they stay so once they do)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.uri, uri=True, timeout=30, check_same_thread=False)
            conn.text_factory = bytes
            self._local.conn = conn
        return conn

    async def page(self, request: PageRequest, *, heavy: bool, first_try: bool = False) -> JsonPage:
        """A small page on the event loop (an indexed read of a local file costs less
        than a thread hop, and its budget bounds it); a heavy one in the thread pool."""
        if heavy or request.filters:  # a filtered page may scan: never on the loop
            return await run_sync(self.read, request)
        return self.read(request, light=first_try)

    async def aclose(self) -> None:
        return None

    async def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket] | None:
        """The buckets of a range of whole minutes, at most ``LOOP_ROWS`` buckets, read from
        the rollups on the event loop as a small page is (a month of hourly rollups:
        0.3 ms, less than the thread hop); None for an open or wider range, or one with
        ragged ends (less than a minute is read from the rows themselves, as many as
        that minute holds), which the store reads in a thread."""
        if since is None or until is None:
            return None
        if (until - since).total_seconds() / BUCKET_SECONDS[bucket] > LOOP_ROWS:
            return None
        if any(span.width == 0 for span in rollups.plan(bucket, since, until)[1]):
            return None  # a ragged end reads rows (any number in a busy minute): a thread
        if not self._rollups_built():
            return None
        return await rollups.buckets_on(
            self._fetch, "sqlite", topic_id, bucket=bucket, since=since, until=until, limit=limit
        )

    async def all_stats(self) -> list[TopicTotals] | None:
        """Every topic's totals: as many rows as topics, so read by the store in a thread."""
        return None

    async def stats_version(self, topic_id: int | None) -> StatsVersion | None:
        """A primary-key lookup on the read-only connection; every topic's version there
        too, up to ``LOOP_ROWS`` topics (more are read again in a thread)."""
        if not self._rollups_built():
            return None
        if topic_id is not None:
            return stats_version_of(self._rows(STATS_VERSION, {"topic": topic_id}))
        rows = self._rows(f"{STATS_VERSIONS} LIMIT {LOOP_ROWS + 1}", {})
        if len(rows) > LOOP_ROWS:
            rows = await run_sync(self._rows, STATS_VERSIONS, {})
        return await read_stats_version(rows)

    def _rollups_built(self) -> bool:
        if not self._built:
            rows = self._rows(rollups.BUILD_LEFT, rollups.BUILD_LEFT_VALUES)
            self._built = not rows or int(rows[0][0]) <= 0
        return self._built

    async def _fetch(self, sql: str, values: Mapping[str, Any]) -> list[Any]:
        return self._rows(sql, values)

    def _rows(self, sql: str, values: Mapping[str, Any]) -> list[Any]:
        try:
            return self._connection().execute(sql, values).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not be read ({type(exc).__name__})") from exc

    def read(self, request: PageRequest, *, light: bool = False) -> JsonPage:
        """The page; when ``light`` and the page is cut by its byte budget before
        ``limit`` rows, or holds a row bigger than the budget, without its rows (the
        service reads it again as a heavy page), so that a big message is never copied
        on the event loop."""
        values: dict[str, Any] = {
            "topic": request.topic_id,
            "after": request.after_seq,
            "probe": request.limit + 1,
            "cap": request.max_bytes if light else MAX_INT64,
        }
        since, until = request.since, request.until
        matching, bound = where_sql(request.filters, "sqlite")
        values.update(bound)
        if not request.in_time:
            statements = [COLUMNS + matching + IN_INGEST_ORDER]
        else:
            if until is not None:
                values["until"] = _stored(until)
            start = window_start(since, Position(request.after_seq, request.after_time))
            upper = (UNTIL if until is not None else "") + matching
            if start is None:
                statements = [COLUMNS + upper + IN_TIME_ORDER]
            elif start[1] == 0:  # from ``since`` itself: every row at that instant
                values["after_time"] = _stored(start[0])
                statements = [COLUMNS + SINCE + upper + IN_TIME_ORDER]
            else:
                values["after_time"], values["after"] = _stored(start[0]), start[1]
                at = (UNTIL_AT if until is not None else "") + matching
                statements = [
                    COLUMNS + REST_OF_INSTANT.format(at=at),
                    COLUMNS + AFTER_INSTANT + upper + IN_TIME_ORDER,
                ]
        if request.filters:  # a literal, so that a partial field index of the topic applies
            literal = f"topic_id = {int(request.topic_id)}"
            statements = [sql.replace("topic_id = :topic", literal) for sql in statements]
        try:
            conn = self._connection()
            bounded = (
                sqlite_deadline(conn, self.query_timeout) if request.filters else nullcontext()
            )
            with bounded:
                rows, more = _within_budget(_stepped(conn, statements, values), request)
                exists = (
                    bool(rows) or conn.execute(TOPIC, (request.topic_id,)).fetchone() is not None
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not be read ({type(exc).__name__})") from exc
        if (light and more and len(rows) < request.limit) or (rows and rows[-1][4] is None):
            return JsonPage(b"[]", None, True, 0)  # read again, in a thread
        last = (rows[-1][0], _published(rows[-1][1])) if rows else None
        objects = [
            ROW
            % (
                message_id.replace(b"\\", b"\\\\").replace(b'"', b'\\"'),
                data,
                attributes,
                published[:10],
                published[11:],
                ingested[:10],
                ingested[11:],
                b"null" if version is None else b"%d" % version,
            )
            for _, published, _, message_id, data, attributes, ingested, version in rows
        ]
        return JsonPage(b"[" + b",".join(objects) + b"]", last, more, len(rows), exists)


def _stepped(
    conn: sqlite3.Connection, statements: list[str], values: Mapping[str, Any]
) -> Generator[Any, None, None]:
    """The rows of ``statements``, one statement after the other, each run only when
    the rows before it are all taken and closed as soon as its rows are not wanted."""
    for sql in statements:
        cursor = conn.execute(sql, values)
        try:
            yield from cursor
        finally:
            cursor.close()


def _within_budget(
    rows: Generator[Any, None, None], request: PageRequest
) -> tuple[list[Any], bool]:
    """The page's rows, taken until ``limit`` of them or the row that brings their bytes
    (the third column) to the budget, as storage.dialects.within_bytes cuts: a row is
    kept while the rows before it hold less than the budget, so the first one always
    is; and whether rows follow. A row without its data (bigger than the light budget)
    ends the page there."""
    kept: list[Any] = []
    total = 0
    try:
        for row in rows:
            if len(kept) == request.limit or total >= request.max_bytes:
                return kept, True
            kept.append(row)
            if row[4] is None:
                return kept, True
            total += row[2]
        return kept, False
    finally:
        rows.close()  # the statement being stepped through is closed


def _published(stored: bytes) -> datetime:
    return datetime.fromisoformat(stored.decode()).replace(tzinfo=UTC)
