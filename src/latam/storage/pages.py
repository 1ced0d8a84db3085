"""Pages of messages from the embedded SQLite store, rendered straight to JSON bytes.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from latam.domain import Position, window_start
from latam.errors import StoreUnavailable

SELECT = (
    "SELECT seq, message_id, data, attributes, published_at, ingested_at,"
    " size_bytes + length(attributes) AS row_bytes FROM messages WHERE topic_id = :topic"
)
IN_INGEST_ORDER = " AND seq > :after ORDER BY seq LIMIT :probe"
# Publish-time order (domain.Position), as storage.dialects.in_time_order reads it on
# SQLite: the rest of the cursor's instant, then what follows, as two index seeks.
SINCE = " AND published_at >= :after_time"
UNTIL = " AND published_at < :until"
IN_TIME_ORDER = " ORDER BY published_at, seq LIMIT :probe"
# Built from the constants above and placeholders only.
AFTER_IN_TIME = (
    f"SELECT * FROM ({SELECT} AND published_at = :after_time AND seq > :after{{until}}"  # noqa: S608  # nosec B608
    " ORDER BY seq LIMIT :probe)"
    f" UNION ALL SELECT * FROM ({SELECT} AND published_at > :after_time{{until}}{IN_TIME_ORDER})"
    " ORDER BY 5, 1 LIMIT :probe"  # published_at, seq
)
# A page bounded in bytes (storage.dialects.within_bytes): the rows of the probe up to the
# one that brings their bytes to :budget, and how many rows the probe found.
WITHIN_BYTES = (
    "SELECT seq, message_id, data, attributes, published_at, ingested_at, probed FROM ("
    "SELECT *, SUM(row_bytes) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS running,"
    " COUNT(*) OVER () AS probed FROM ({page}))"
    " WHERE running - row_bytes < :budget ORDER BY {order}"
)
ROW = b'{"id":%s,"data":%s,"attributes":%s,"published_at":"%sT%sZ","ingested_at":"%sT%sZ"}'
PLAIN_ID_ROW = ROW.replace(b'"id":%s', b'"id":"%s"')


def _stored(value: datetime) -> str:
    """A bound timestamp in the text form SQLAlchemy stores (naive UTC, microseconds)."""
    # isoformat, not strftime: "%Y" does not pad years before 1000 to four digits.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _quoted(message_id: bytes) -> bytes:
    return orjson.dumps(message_id.decode())


class SqlitePages:
    """Reads pages of one SQLite database file, one read-only connection per thread."""

    def __init__(self, path: Path) -> None:
        self.uri = f"{path.resolve().as_uri()}?mode=ro"
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.uri, uri=True, timeout=30, check_same_thread=False)
            conn.text_factory = bytes
            self._local.conn = conn
        return conn

    def page(
        self,
        topic_id: int,
        *,
        limit: int,
        after_seq: int,
        since: datetime | None = None,
        until: datetime | None = None,
        after_time: datetime | None = None,
        max_bytes: int | None = None,
    ) -> tuple[bytes, tuple[int, datetime] | None, bool]:
        """The page as a JSON array, the seq and publish time of the last row shown
        (None for an empty page), and whether another page follows; with ``max_bytes``,
        the page stops after the row that brings its bytes there."""
        values: dict[str, Any] = {"topic": topic_id, "after": after_seq, "probe": limit + 1}
        if since is None and until is None:
            sql = SELECT + IN_INGEST_ORDER
        else:
            if until is not None:
                values["until"] = _stored(until)
            start = window_start(since, Position(after_seq, after_time))
            upper = UNTIL if until is not None else ""
            if start is None:
                sql = SELECT + upper + IN_TIME_ORDER
            elif start[1] == 0:  # from ``since`` itself: every row at that instant
                values["after_time"] = _stored(start[0])
                sql = SELECT + SINCE + upper + IN_TIME_ORDER
            else:
                values["after_time"], values["after"] = _stored(start[0]), start[1]
                sql = AFTER_IN_TIME.format(until=upper)
        if max_bytes is not None:
            order = "seq" if since is None and until is None else "published_at, seq"
            sql = WITHIN_BYTES.format(order=order, page=sql)
            values["budget"] = max_bytes
        try:
            rows = self._connection().execute(sql, values).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not be read ({type(exc).__name__})") from exc
        shown = rows[:limit]
        last = (shown[-1][0], _published(shown[-1][4])) if shown else None
        if max_bytes is None:
            return b"[" + _rows(shown) + b"]", last, len(rows) > limit
        probed = rows[0][6] if rows else 0
        return b"[" + _rows(shown) + b"]", last, probed > len(shown)


def _published(stored: bytes) -> datetime:
    return datetime.fromisoformat(stored.decode()).replace(tzinfo=UTC)


def _rows(rows: list[tuple[Any, ...]]) -> bytes:
    """Rows as comma-separated JSON objects. Ids are printable (domain.validate_message_id),
    so only a quote or a backslash needs escaping, and a page rarely holds one."""
    ids = b"".join([row[1] for row in rows])
    if b'"' in ids or b"\\" in ids:
        return b",".join(
            [
                ROW % (_quoted(m), d, a, p[:10], p[11:], i[:10], i[11:])
                for _, m, d, a, p, i, *_ in rows
            ]
        )
    return b",".join(
        [PLAIN_ID_ROW % (m, d, a, p[:10], p[11:], i[:10], i[11:]) for _, m, d, a, p, i, *_ in rows]
    )
