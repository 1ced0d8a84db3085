"""The embedded broker: a durable queue in a SQLite file, safe for several processes.

Leases make delivery at-least-once: a pulled message is invisible until its ack
deadline; unacked, it comes back. Each lease carries a random token so that a late ack
from a consumer whose lease expired cannot delete a message another consumer holds.
"""

from __future__ import annotations

import functools
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from latam.broker.base import (
    REASON_MAX_ATTEMPTS,
    Backlog,
    DeadLetter,
    Delivery,
    DeliveryPolicy,
)
from latam.domain import ATTR_MESSAGE_ID, ATTR_TOPIC, OutboundMessage
from latam.errors import BrokerUnavailable, NotFound

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
CREATE INDEX IF NOT EXISTS queue_available ON queue (available_at, seq);
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
POLL_MIN, POLL_MAX = 0.01, 0.1  # seconds between looks at an empty queue, growing while idle
MAX_ROW_ID = 2**63 - 1
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


@functools.lru_cache(maxsize=4096)
def _ts(epoch: float) -> datetime:
    # A batch shares a handful of publish times: convert each once.
    return datetime.fromtimestamp(epoch, UTC)


class SqliteBroker:
    """Broker adapter on a local SQLite file (``sqlite:///path/to/broker.db``)."""

    name = "sqlite"

    def __init__(self, path: Path, policy: DeliveryPolicy, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.policy = policy
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._conn: sqlite3.Connection | None = None
        self._level = synchronous
        self._idle = POLL_MIN
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._publish_lock = threading.Lock()

    # -- connection -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
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
                conn.executescript(SCHEMA)
                # Writers wait for the lock in _begin, not in SQLite's busy handler.
                conn.execute("PRAGMA busy_timeout=0")
            except (sqlite3.Error, OSError) as exc:
                raise BrokerUnavailable(f"embedded broker file unavailable: {exc}") from exc
            self._conn = conn
        return self._conn

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: writers serialise instead of failing on upgrade.

        Only publishes must survive power loss before they return. Leases and acks may
        be lost with the last moments before a power cut: the message is then delivered
        again and the store's unique key ignores it. Skipping their fsync halves the
        fsyncs per message (see docs/benchmarks.md).
        """
        with self._lock:
            conn = self._connect()
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
                self._reset()
                raise BrokerUnavailable(f"embedded broker failed: {exc}") from exc

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- producer -------------------------------------------------------------------
    def publish(self, messages: Sequence[OutboundMessage]) -> None:
        """Durable on return. Concurrent publishers share one commit (group commit):
        whoever holds the write lock commits every batch queued meanwhile."""
        now = time.time()
        mine = _Pending(
            [
                (
                    m.body,
                    orjson.dumps(m.wire_attributes()).decode(),
                    m.published_at.timestamp(),
                    now,
                )
                for m in messages
            ]
        )
        with self._pending_lock:
            self._pending.append(mine)
        with self._publish_lock:
            if not mine.done:
                with self._pending_lock:
                    group, self._pending = self._pending, []
                try:
                    with self._tx() as conn:
                        conn.executemany(
                            "INSERT INTO queue (body, attributes, published_at, available_at)"
                            " VALUES (?, ?, ?, ?)",
                            [row for pending in group for row in pending.rows],
                        )
                except BrokerUnavailable as exc:
                    for pending in group:
                        pending.error = exc
                for pending in group:
                    pending.done = True
        if mine.error is not None:
            raise mine.error

    # -- consumer -------------------------------------------------------------------
    def pull(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            room = min(max_messages, self.policy.max_in_flight - len(self._in_flight))
            deliveries = self._lease(room) if room > 0 and self._available() else []
            if deliveries:
                self._idle = POLL_MIN
                return deliveries
            if time.monotonic() >= deadline:
                return []
            time.sleep(self._idle)
            self._idle = min(self._idle * 2, POLL_MAX)

    def _available(self) -> bool:
        """A read-only look, so an idle consumer never takes the write lock."""
        with self._lock:
            try:
                row = (
                    self._connect()
                    .execute("SELECT 1 FROM queue WHERE available_at <= ? LIMIT 1", (time.time(),))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                self._reset()
                raise BrokerUnavailable(f"embedded broker failed: {exc}") from exc
        return row is not None

    def _lease(self, limit: int) -> list[Delivery]:
        now = time.time()
        token = secrets.token_hex(8)
        with self._tx(durable=False) as conn:
            rows = conn.execute(
                "UPDATE queue SET available_at = ?, attempts = attempts + 1, lease = ?"
                " WHERE seq IN (SELECT seq FROM queue WHERE available_at <= ?"
                " ORDER BY available_at, seq LIMIT ?)"
                " RETURNING seq, body, attributes, published_at, attempts, last_error",
                (now + self.policy.ack_deadline_seconds, token, now, limit),
            ).fetchall()
            # Delivered max times without an ack (the consumer kept dying): set it aside.
            cap = self.policy.max_delivery_attempts
            for seq, _body, _attrs, _pub, attempts, last_error in rows:
                if attempts > cap:
                    reason = f"{REASON_MAX_ATTEMPTS}: {last_error or 'ack deadline expired'}"
                    self._move_to_dead_letters(conn, seq, reason, attempts - 1, now)
        deliveries = [
            Delivery(
                handle=f"{seq}:{token}",
                broker_message_id=f"sqlite-{seq}",
                body=body,
                attributes=orjson.loads(attrs),
                published_at=_ts(published),
                delivery_attempt=attempts,
            )
            for seq, body, attrs, published, attempts, _err in sorted(rows)
            if attempts <= cap
        ]
        self._in_flight.update(d.handle for d in deliveries)
        return deliveries

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_lease: dict[str, list[int]] = {}
        for delivery in deliveries:
            seq, lease = _key(delivery)
            by_lease.setdefault(lease, []).append(seq)
        with self._tx(durable=False) as conn:
            for lease, seqs in by_lease.items():
                marks = ", ".join("?" * len(seqs))
                conn.execute(
                    f"DELETE FROM queue WHERE lease = ? AND seq IN ({marks})",  # noqa: S608 - only placeholders  # nosec B608
                    (lease, *seqs),
                )
        self._in_flight.difference_update(d.handle for d in deliveries)

    def nack(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        now = time.time()
        with self._tx() as conn:
            for delivery in deliveries:
                seq, lease = _key(delivery)
                if delivery.delivery_attempt >= self.policy.max_delivery_attempts:
                    reason_text = f"{REASON_MAX_ATTEMPTS}: {reason}"
                    self._move_to_dead_letters(
                        conn, seq, reason_text, delivery.delivery_attempt, now, lease=lease
                    )
                    continue
                conn.execute(
                    "UPDATE queue SET available_at = ?, lease = NULL, last_error = ?"
                    " WHERE seq = ? AND lease = ?",
                    (now + self.policy.backoff(delivery.delivery_attempt), reason, seq, lease),
                )
        self._in_flight.difference_update(d.handle for d in deliveries)

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        now = time.time()
        with self._tx() as conn:
            for delivery in deliveries:
                seq, lease = _key(delivery)
                self._move_to_dead_letters(
                    conn, seq, reason, delivery.delivery_attempt, now, lease=lease
                )
        self._in_flight.difference_update(d.handle for d in deliveries)

    @staticmethod
    def _move_to_dead_letters(
        conn: sqlite3.Connection,
        seq: int,
        reason: str,
        attempts: int,
        now: float,
        *,
        lease: str | None = None,
    ) -> None:
        guard, params = ("AND lease = ?", (seq, lease)) if lease else ("", (seq,))
        moved = conn.execute(
            "INSERT INTO dead_letters (body, attributes, published_at, reason, attempts, dead_at)"  # noqa: S608 - guard is a constant  # nosec B608
            f" SELECT body, attributes, published_at, ?, ?, ? FROM queue WHERE seq = ? {guard}",
            (reason[:1000], attempts, now, *params),
        ).rowcount
        if moved:
            conn.execute("DELETE FROM queue WHERE seq = ?", (seq,))

    # -- dead letters -----------------------------------------------------------------
    def list_dead_letters(self, *, limit: int, after: str | None = None) -> list[DeadLetter]:
        after_id = _row_id(after) or 0
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, body, attributes, published_at, reason, attempts, dead_at"
                " FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [_dead_letter(row) for row in rows]

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        row_id = _row_id(dead_letter_id)
        if row_id is None:
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, body, attributes, published_at, reason, attempts, dead_at"
                " FROM dead_letters WHERE id = ?",
                (row_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return _dead_letter(row)

    def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        now = time.time()
        where, params = _id_filter(ids)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO queue (body, attributes, published_at, available_at)"  # noqa: S608 - only placeholders  # nosec B608
                f" SELECT body, attributes, published_at, ? FROM dead_letters {where}"
                " ORDER BY id",
                (now, *params),
            )
            return conn.execute(f"DELETE FROM dead_letters {where}", params).rowcount  # noqa: S608 - only placeholders  # nosec B608

    def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        where, params = _id_filter(ids)
        with self._tx() as conn:
            return conn.execute(f"DELETE FROM dead_letters {where}", params).rowcount  # noqa: S608 - only placeholders  # nosec B608

    # -- health ---------------------------------------------------------------------
    def backlog(self) -> Backlog:
        with self._tx() as conn:
            count, oldest = conn.execute("SELECT count(*), min(published_at) FROM queue").fetchone()
        age = max(time.time() - oldest, 0.0) if oldest is not None else None
        return Backlog(messages=count, oldest_age_seconds=age)

    def dead_letter_count(self) -> int:
        with self._tx() as conn:
            return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute("SELECT 1 FROM queue LIMIT 1").fetchall()

    def close(self) -> None:
        with self._lock:
            self._reset()


@dataclass
class _Pending:
    """A publisher's rows waiting for a group commit, and how it ended."""

    rows: list[tuple[bytes, str, float, float]]
    done: bool = False
    error: BrokerUnavailable | None = None


def _key(delivery: Delivery) -> tuple[int, str]:
    seq, lease = delivery.handle.split(":", 1)
    return int(seq), lease


def _row_id(text: str | None) -> int | None:
    """The row id ``text`` names, or None when it cannot be one: not ASCII digits, or
    past SQLite's 64-bit integers (the driver would raise OverflowError)."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if number <= MAX_ROW_ID else None


def _id_filter(ids: Sequence[str] | None) -> tuple[str, tuple[int, ...]]:
    if ids is None:
        return "", ()
    numbers = tuple(n for n in map(_row_id, ids) if n is not None)
    if not numbers:
        return "WHERE 0", ()
    return f"WHERE id IN ({', '.join('?' * len(numbers))})", numbers


def _dead_letter(row: tuple[int, bytes, str, float, str, int, float]) -> DeadLetter:
    dl_id, body, attrs, published, reason, attempts, dead_at = row
    attributes: dict[str, str] = orjson.loads(attrs)
    return DeadLetter(
        id=str(dl_id),
        topic=attributes.get(ATTR_TOPIC, ""),
        message_id=attributes.get(ATTR_MESSAGE_ID, ""),
        body=bytes(body),
        attributes=attributes,
        reason=reason,
        delivery_attempts=attempts,
        published_at=_ts(published),
        dead_lettered_at=_ts(published if dead_at is None else dead_at),
    )
