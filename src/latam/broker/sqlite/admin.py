"""The embedded queue's file: its schema, its one connection and its transactions.

Every adapter method runs in one ``QueueFile.tx()``: ``BEGIN IMMEDIATE`` so writers
serialise instead of failing on a lock upgrade, any SQLite error re-raised as
``BrokerUnavailable`` after the connection is reset.

A row of ``queue`` is in one of three states, told by its ``lease`` column:

- ``NULL``: never delivered. Rows past ``cursor.after_seq`` wait; rows up to it belong
  to the range lease in ``leases`` that covers them (a row written there later, with an
  explicit ``seq``, is refused by the ``queue_behind_cursor`` trigger; one set back to
  ``NULL``, as a worker of the earlier layout hands a message back, is set to ``''`` by
  the ``queue_handed_back`` trigger). Leasing them writes one
  ``leases`` row and moves the cursor, not the rows.
- a token: leased one by one (``available_at`` is the lease's deadline), or ``''``: handed
  back, waiting until ``available_at``. Only these rows are in the ``queue_retry`` index.

A range lease past its deadline is turned into per-row leases of its token on rows not
yet settled (``attempts`` counted then), so a late ack of its consumer still works until
another consumer takes them.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from latam.errors import BrokerUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    published_at REAL NOT NULL,
    available_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_retry ON queue (available_at, seq) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS leases (
    token TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    deadline REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cursor (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    after_seq INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS queue_behind_cursor AFTER INSERT ON queue
WHEN NEW.seq <= (SELECT after_seq FROM cursor)
BEGIN
    SELECT RAISE(ABORT, 'queue.seq is not past the delivery cursor: leave seq out');
END;
CREATE TRIGGER IF NOT EXISTS queue_handed_back AFTER UPDATE OF lease ON queue
WHEN NEW.lease IS NULL
BEGIN
    UPDATE queue SET lease = '' WHERE seq = NEW.seq;
END;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    published_at REAL NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
"""
# The file's layout, in ``PRAGMA user_version``: 1 = range leases (above). A file of
# layout 0 (every delivery rewrote its row) is brought up by ``_upgrade``.
LAYOUT = 1
# Whether a row is held by the lease whose token is the parameter (given twice): leased
# on its own, or never delivered and inside that token's range lease.
HELD_BY = (
    "(lease = ? OR (lease IS NULL AND EXISTS (SELECT 1 FROM leases"
    " WHERE token = ? AND queue.seq BETWEEN first_seq AND last_seq)))"
)
LOCK_WAIT_SECONDS = 30.0
LOCK_RETRY_MIN, LOCK_RETRY_MAX = 0.0001, 0.001


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting up to ``LOCK_WAIT_SECONDS`` for the write lock.

    SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between tries, so under a
    steady stream of publishes from the API processes the worker's leases and acks
    almost never found the lock free and the worker starved (no progress for seconds
    while 200,000 messages were accepted). Retrying every 0.1-1 ms gives every
    connection its turn.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    delay = LOCK_RETRY_MIN
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, LOCK_RETRY_MAX)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file of an earlier layout to ``LAYOUT``, once, whoever connects first.

    From layout 0: every waiting row joins the retry path as it is (attempts, deadline
    and delay kept; an ``available_at`` that is no time reads as now), the cursor starts
    past them, and the index every row paid for goes.
    """
    conn.execute("BEGIN IMMEDIATE")  # busy_timeout still applies here
    try:
        (layout,) = conn.execute("PRAGMA user_version").fetchone()
        if layout < 1:
            conn.execute(
                "UPDATE queue SET lease = '', available_at = CASE WHEN typeof(available_at)"
                " IN ('integer', 'real') THEN available_at ELSE 0 END WHERE lease IS NULL"
            )
            conn.execute("DROP INDEX IF EXISTS queue_available")
            conn.execute(
                "INSERT OR REPLACE INTO cursor (one, after_seq)"
                " SELECT 1, coalesce(max(seq), 0) FROM queue"
            )
            conn.execute(f"PRAGMA user_version = {LAYOUT}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class QueueFile:
    """One connection to the queue file, created with its schema on first use."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._level = synchronous
        self.lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                self._level = self._synchronous
                conn.execute("PRAGMA busy_timeout=30000")
                # A WAL that grew during a burst is cut back to 64 MiB at the next checkpoint.
                conn.execute("PRAGMA journal_size_limit=67108864")
                conn.executescript(SCHEMA)
                _upgrade(conn)
                # Writers wait for the lock in _begin, not in SQLite's busy handler.
                conn.execute("PRAGMA busy_timeout=0")
            except (sqlite3.Error, OSError) as exc:
                raise BrokerUnavailable(f"embedded broker file unavailable: {exc}") from exc
            self._conn = conn
        return self._conn

    @contextmanager
    def tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: writers serialise instead of failing on upgrade.

        Only publishes must survive power loss before they return. Leases and acks may
        be lost with the last moments before a power cut: the message is then delivered
        again and the store's unique key ignores it. Skipping their fsync halves the
        fsyncs per message (see docs/benchmarks.md).
        """
        with self.lock:
            conn = self.connect()
            level = self._synchronous if durable else "NORMAL"
            try:
                if level != self._level:
                    conn.execute(f"PRAGMA synchronous={level}")
                    self._level = level
                _begin(conn)
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.reset()
                raise BrokerUnavailable(f"embedded broker failed: {exc}") from exc

    def reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def read_one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[object, ...] | None:
        """A read-only look outside any write transaction (no write lock taken)."""
        rows = self.read_all(sql, params)
        return rows[0] if rows else None

    def read_all(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Every row of a read-only query, outside any write transaction."""
        with self.lock:
            try:
                rows: list[tuple[object, ...]] = self.connect().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                self.reset()
                raise BrokerUnavailable(f"embedded broker failed: {exc}") from exc
        return rows

    def close(self) -> None:
        with self.lock:
            self.reset()


# Rows as producers wrote them. Anyone may INSERT into the queue (that is how a foreign
# producer feeds it), so no column can be trusted to hold what the schema suggests: each
# reader returns a usable value and, when the stored one was not, the dead-letter reason.
@functools.lru_cache(maxsize=4096)
def timestamp(epoch: float) -> datetime:
    # A batch shares a handful of publish times: convert each once.
    return datetime.fromtimestamp(epoch, UTC)


def read_time(value: object) -> tuple[datetime, str | None]:
    """Unix seconds as UTC; now and ``invalid_timestamp`` for anything else."""
    try:
        return timestamp(float(value)), None  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC), "invalid_timestamp"


def read_body(value: object) -> tuple[bytes, str | None]:
    """The body as bytes: a BLOB as is, TEXT as UTF-8; ``invalid_body`` for numbers/NULL."""
    if isinstance(value, bytes):
        return value, None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass"), None
    return str(value).encode(), "invalid_body"
