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
from collections.abc import Mapping
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

# A page is read in two statements: the probe walks an index for the keys and sizes of
# at most ``limit + 1`` rows, cut at the byte budget by a running sum of their sizes
# (``_within_budget``); then only the rows kept are read, by rowid, for their data: a
# 250 KB message past the budget is never read, and nothing is sorted with its data.
# The sizes are the last column of both page indexes on SQLite (migration 0006), so
# the probes read no row.
SEQ_KEYS = (
    "SELECT seq, size_bytes + length(attributes) AS row_bytes FROM messages WHERE topic_id = :topic"
)
KEYS = (
    "SELECT seq, published_at, size_bytes + length(attributes) AS row_bytes"
    " FROM messages WHERE topic_id = :topic"
)
IN_INGEST_ORDER = " AND seq > :after ORDER BY seq LIMIT :probe"
# Publish-time order (domain.Position), as storage.dialects.in_time_order reads it on
# SQLite: the rest of the cursor's instant, then what follows, as two index seeks.
SINCE = " AND published_at >= :after_time"
UNTIL = " AND published_at < :until"
IN_TIME_ORDER = " ORDER BY published_at, seq LIMIT :probe"
# Built from the constants above and placeholders only.
AFTER_IN_TIME = (
    f"SELECT * FROM ({KEYS} AND published_at = :after_time AND seq > :after{{until}}"  # noqa: S608  # nosec B608
    " ORDER BY seq LIMIT :probe)"
    f" UNION ALL SELECT * FROM ({KEYS} AND published_at > :after_time{{until}}{IN_TIME_ORDER})"
    " ORDER BY 2, 1 LIMIT :probe"  # published_at, seq
)
# The kept rows, each as the JSON object storage.port.message_json renders, built by
# SQLite from the stored text (one value a row, nothing parsed). Ids are printable
# (domain.validate_message_id), so a quote and a backslash are all JSON escapes in them;
# timestamps are stored as naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff".
ROWS = (
    r"""SELECT seq, published_at, '{"id":"'"""
    r""" || replace(replace(message_id, '\', '\\'), '"', '\"') || '","data":' || data"""
    r""" || ',"attributes":' || attributes"""
    r""" || ',"published_at":"' || substr(published_at, 1, 10) || 'T' || substr(published_at, 12)"""
    r""" || 'Z","ingested_at":"' || substr(ingested_at, 1, 10) || 'T' || substr(ingested_at, 12)"""
    r""" || 'Z","schema_version":' || coalesce(schema_version, 'null') || '}'"""
    " FROM messages WHERE seq IN "  # + the kept seqs' placeholders
)
TOPIC = "SELECT 1 FROM topics WHERE id = ?"


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
        ``limit`` rows, without its rows (the service reads it again as a heavy page),
        so that a big message is never read on the event loop."""
        values: dict[str, Any] = {
            "topic": request.topic_id,
            "after": request.after_seq,
            "probe": request.limit + 1,
        }
        since, until = request.since, request.until
        matching, bound = where_sql(request.filters, "sqlite")
        values.update(bound)
        if not request.in_time:
            sql = SEQ_KEYS + matching + IN_INGEST_ORDER
        else:
            if until is not None:
                values["until"] = _stored(until)
            start = window_start(since, Position(request.after_seq, request.after_time))
            upper = (UNTIL if until is not None else "") + matching
            if start is None:
                sql = KEYS + upper + IN_TIME_ORDER
            elif start[1] == 0:  # from ``since`` itself: every row at that instant
                values["after_time"] = _stored(start[0])
                sql = KEYS + SINCE + upper + IN_TIME_ORDER
            else:
                values["after_time"], values["after"] = _stored(start[0]), start[1]
                sql = AFTER_IN_TIME.format(until=upper)
        if request.filters:  # a literal, so that a partial field index of the topic applies
            sql = sql.replace("topic_id = :topic", f"topic_id = {int(request.topic_id)}")
        try:
            conn = self._connection()
            bounded = (
                sqlite_deadline(conn, self.query_timeout) if request.filters else nullcontext()
            )
            with bounded:
                probe = conn.execute(sql, values).fetchall()
            seqs = _within_budget(probe[: request.limit], request.max_bytes)
            if light and len(probe) > len(seqs) < request.limit:
                return JsonPage(b"[]", None, True, len(seqs))
            marks = ",".join("?" * len(seqs))
            found = conn.execute(f"{ROWS}({marks})", seqs).fetchall()
            exists = bool(found) or conn.execute(TOPIC, (request.topic_id,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not be read ({type(exc).__name__})") from exc
        where = {seq: n for n, seq in enumerate(seqs)}
        # A row deleted between the two reads (its topic deleted) is left out.
        shown = sorted(found, key=lambda row: where[row[0]])
        last = (shown[-1][0], _published(shown[-1][1])) if shown else None
        array = b"[" + b",".join([row[2] for row in shown]) + b"]"
        return JsonPage(array, last, len(probe) > len(seqs), len(shown), exists)


def _within_budget(probe: list[Any], budget: int) -> list[int]:
    """The probe's seqs up to the row that brings their bytes (its last column) to
    ``budget``, as storage.dialects.within_bytes cuts: a row is kept while the rows
    before it hold less than the budget, so the first one always is."""
    seqs: list[int] = []
    total = 0
    for row in probe:
        if total >= budget:
            break
        seqs.append(row[0])
        total += row[-1]
    return seqs


def _published(stored: bytes) -> datetime:
    return datetime.fromisoformat(stored.decode()).replace(tzinfo=UTC)
