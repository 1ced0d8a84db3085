"""The embedded broker: a durable queue in a SQLite file, safe for several processes.

Leases make delivery at-least-once: a pulled message is invisible until its ack
deadline; unacked, it comes back. Each lease carries a random token so that a late ack
from a consumer whose lease expired cannot delete a message another consumer holds.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from latam.broker.base import (
    Backlog,
    DeadLettersIn,
    Delivery,
    DeliveryPolicy,
    read_attributes,
)
from latam.broker.sqlite.admin import HELD_BY, QueueFile, read_body, read_time
from latam.broker.sqlite.dead_letters import (
    MAX_REASON,
    DeadLetterTable,
    move_to_dead_letters,
)
from latam.domain import OutboundMessage
from latam.errors import BrokerUnavailable

POLL_MIN, POLL_MAX = 0.01, 0.1  # seconds between looks at an empty queue, growing while idle
# Rows past the cursor one lease looks at, at most: rows a producer wrote for later are
# moved to the retry path on the way, so a long run of them is crossed in a few leases.
MAX_SCAN = 20_000

# Whether anything can be leased: a row handed back or leased alone whose time has come,
# a row never delivered at or past the cursor, a range lease past its deadline.
AVAILABLE = (
    "SELECT EXISTS (SELECT 1 FROM queue WHERE lease IS NOT NULL AND available_at <= ?)"
    " OR EXISTS (SELECT 1 FROM queue WHERE seq > (SELECT after_seq FROM cursor)"
    " AND lease IS NULL) OR EXISTS (SELECT 1 FROM leases WHERE deadline <= ?)"
)
# Rows handed back or whose own lease ran out, oldest first, leased one by one.
RETRY = (
    "UPDATE queue SET available_at = ?, attempts = attempts + 1, lease = ?"
    " WHERE seq IN (SELECT seq FROM queue WHERE lease IS NOT NULL AND available_at <= ?"
    " ORDER BY available_at, seq LIMIT ?)"
    " RETURNING seq, body, attributes, published_at, attempts, last_error"
)
# The next rows never delivered, in order; the last column says whether a row's time has
# come (a producer may write a later ``available_at``, or something that is no time).
NEXT_RANGE = (
    "SELECT seq, body, attributes, published_at, attempts + 1, last_error,"
    " CASE WHEN typeof(available_at) IN ('integer', 'real') THEN available_at <= ? ELSE 1 END"
    " FROM queue WHERE seq > (SELECT after_seq FROM cursor) AND lease IS NULL"
    " ORDER BY seq LIMIT ?"
)


class SqliteBroker(DeadLettersIn):
    """Broker adapter on a local SQLite file (``sqlite:///path/to/broker.db``)."""

    name = "sqlite"

    def __init__(self, path: Path, policy: DeliveryPolicy, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.policy = policy
        self.file = QueueFile(path, synchronous=synchronous)
        self._dead_letters = DeadLetterTable(self.file)
        self._in_flight: set[str] = set()
        self._idle = POLL_MIN
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._publish_lock = threading.Lock()

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
                    with self.file.tx() as conn:
                        conn.executemany(
                            "INSERT INTO queue (body, attributes, published_at, available_at)"
                            " VALUES (?, ?, ?, ?)",
                            [row for pending in group for row in pending.rows],
                        )
                except BaseException as exc:
                    # Whatever ended the commit, no publisher of the group may answer
                    # as if its rows were written.
                    failure = (
                        exc
                        if isinstance(exc, BrokerUnavailable)
                        else BrokerUnavailable(f"embedded broker failed: {type(exc).__name__}")
                    )
                    for pending in group:
                        pending.error = failure
                    if not isinstance(exc, Exception):
                        raise
                finally:
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
        now = time.time()
        row = self.file.read_one(AVAILABLE, (now, now))
        return row is not None and bool(row[0])

    def _lease(self, limit: int) -> list[Delivery]:
        """Rows handed back or whose lease ran out first, one by one; then the next rows
        never delivered, as one range lease (one ``leases`` row, the rows untouched)."""
        now = time.time()
        token = secrets.token_hex(8)
        deadline = now + self.policy.ack_deadline_seconds
        with self.file.tx(durable=False) as conn:
            self._expire(conn, now)
            rows = conn.execute(RETRY, (deadline, token, now, limit)).fetchall()
            if len(rows) < limit:
                rows += _take_range(conn, token, now, deadline, limit - len(rows))
        deliveries = [
            _delivery(f"{seq}:{token}", seq, body, attrs, published, attempts, last_error)
            for seq, body, attrs, published, attempts, last_error in sorted(rows)
        ]
        self._in_flight.update(d.handle for d in deliveries)
        return deliveries

    def _expire(self, conn: sqlite3.Connection, now: float) -> None:
        """Range leases past their deadline become per-row leases of the same token on
        the rows not yet settled, available again (their delivery counted now)."""
        expired = conn.execute(
            "SELECT token, first_seq, last_seq, deadline FROM leases WHERE deadline <= ?", (now,)
        ).fetchall()
        for token, first, last, deadline in expired:
            conn.execute(
                "UPDATE queue SET lease = ?, attempts = attempts + 1, available_at = ?"
                " WHERE seq BETWEEN ? AND ? AND lease IS NULL",
                (token, deadline, first, last),
            )
            conn.execute("DELETE FROM leases WHERE token = ?", (token,))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_lease: dict[str, list[int]] = {}
        for delivery in deliveries:
            seq, lease = _key(delivery)
            by_lease.setdefault(lease, []).append(seq)
        with self._settling(deliveries), self.file.tx(durable=False) as conn:
            for lease, seqs in by_lease.items():
                marks = ", ".join("?" * len(seqs))
                conn.execute(
                    f"DELETE FROM queue WHERE {HELD_BY} AND seq IN ({marks})",  # noqa: S608 - only placeholders  # nosec B608
                    (lease, lease, *seqs),
                )
            _release(conn, by_lease)

    def nack(self, deliveries: Sequence[Delivery], *, reason: str, delay: float) -> None:
        available = time.time() + delay
        with self._settling(deliveries), self.file.tx() as conn:
            # A row of a range lease counts its delivery now; one leased alone counted it.
            conn.executemany(
                "UPDATE queue SET available_at = ?, lease = '', last_error = ?,"  # noqa: S608 - constant predicate  # nosec B608
                f" attempts = attempts + (lease IS NULL) WHERE seq = ? AND {HELD_BY}",
                [
                    (available, reason[:MAX_REASON], seq, lease, lease)
                    for seq, lease in map(_key, deliveries)
                ],
            )
            _release(conn, {_key(d)[1] for d in deliveries})

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        now = time.time()
        with self._settling(deliveries), self.file.tx() as conn:
            leases = set()
            for delivery in deliveries:
                seq, lease = _key(delivery)
                leases.add(lease)
                # The attributes as delivered (with the id the worker gave a message that
                # had none); a row whose attributes could not be read keeps them as written.
                attributes = None if delivery.defect else orjson.dumps(delivery.attributes)
                move_to_dead_letters(
                    conn, seq, reason, delivery.delivery_attempt, now, lease, attributes
                )
            _release(conn, leases)

    @contextmanager
    def _settling(self, deliveries: Sequence[Delivery]) -> Iterator[None]:
        """Forget the handles however the settle ends: one that failed leaves the row
        leased until its deadline, after which it is delivered again, so flow control
        must not keep counting it (or, after a few failures, pull nothing forever)."""
        try:
            yield
        finally:
            self._in_flight.difference_update(d.handle for d in deliveries)

    @property
    def dead_letters(self) -> DeadLetterTable:
        return self._dead_letters

    # -- health ---------------------------------------------------------------------
    # Read-only looks: a probe or a gauge never takes the write lock publishers wait on.
    def backlog(self) -> Backlog:
        row = self.file.read_one("SELECT count(*), min(published_at) FROM queue")
        count, oldest = row if row is not None else (0, None)
        age = max(time.time() - float(oldest), 0.0) if oldest is not None else None  # type: ignore[arg-type]
        return Backlog(messages=int(count), oldest_age_seconds=age)  # type: ignore[call-overload]

    def ping(self) -> None:
        self.file.read_one("SELECT 1 FROM queue LIMIT 1")

    def close(self) -> None:
        self.file.close()


def _take_range(
    conn: sqlite3.Connection, token: str, now: float, deadline: float, limit: int
) -> list[tuple[int, object, object, object, int, str | None]]:
    """Up to ``limit`` rows never delivered, leased as the range ``token``. Rows met on
    the way whose time has not come join the retry path, which waits for it; past
    ``MAX_SCAN`` of them the lease ends with what it has (the next one goes on)."""
    taken: list[tuple[int, object, object, object, int, str | None]] = []
    later: list[int] = []
    scanned = 0
    while len(taken) < limit and scanned < MAX_SCAN:
        want = limit - len(taken)
        rows = conn.execute(NEXT_RANGE, (now, want)).fetchall()
        if not rows:
            break
        scanned += len(rows)
        for row in rows:
            if row[6]:
                taken.append(row[:6])
            else:
                later.append(row[0])
        conn.execute("UPDATE cursor SET after_seq = ?", (rows[-1][0],))
        if len(rows) < want:
            break
    conn.executemany("UPDATE queue SET lease = '' WHERE seq = ?", [(seq,) for seq in later])
    if taken:
        conn.execute(
            "INSERT INTO leases (token, first_seq, last_seq, deadline) VALUES (?, ?, ?, ?)",
            (token, taken[0][0], taken[-1][0], deadline),
        )
    return taken


def _release(conn: sqlite3.Connection, tokens: Iterable[str]) -> None:
    """Drop the range leases of ``tokens`` that hold no row any more."""
    conn.executemany(
        "DELETE FROM leases WHERE token = ? AND NOT EXISTS (SELECT 1 FROM queue"
        " WHERE seq BETWEEN leases.first_seq AND leases.last_seq AND lease IS NULL)",
        [(token,) for token in tokens],
    )


@dataclass
class _Pending:
    """A publisher's rows waiting for a group commit, and how it ended."""

    rows: list[tuple[bytes, str, float, float]]
    done: bool = False
    error: BrokerUnavailable | None = None


def _delivery(
    handle: str,
    seq: int,
    body: object,
    attrs: object,
    published: object,
    attempts: int,
    last_error: str | None,
) -> Delivery:
    """A leased row as a delivery; a row a producer wrote badly carries its ``defect``."""
    data, body_defect = (body, None) if type(body) is bytes else read_body(body)
    attributes, attributes_defect = read_attributes(attrs)
    published_at, time_defect = read_time(published)
    return Delivery(  # positional: once per message
        handle,
        f"sqlite-{seq}",
        data,
        attributes,
        published_at,
        attempts,
        last_error if isinstance(last_error, str) else None,
        body_defect or attributes_defect or time_defect,
    )


def _key(delivery: Delivery) -> tuple[int, str]:
    seq, lease = delivery.handle.split(":", 1)
    return int(seq), lease
