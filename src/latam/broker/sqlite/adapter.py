"""The embedded broker: a durable queue in a SQLite file, safe for several processes.

Leases make delivery at-least-once: a pulled message is invisible until its ack
deadline; unacked, it comes back. Each lease carries a random token so that a late ack
from a consumer whose lease expired cannot delete a message another consumer holds.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence
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
from latam.broker.sqlite.admin import QueueFile, read_body, read_time
from latam.broker.sqlite.dead_letters import (
    MAX_REASON,
    DeadLetterTable,
    move_to_dead_letters,
)
from latam.domain import OutboundMessage
from latam.errors import BrokerUnavailable

POLL_MIN, POLL_MAX = 0.01, 0.1  # seconds between looks at an empty queue, growing while idle


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
        row = self.file.read_one(
            "SELECT 1 FROM queue WHERE available_at <= ? LIMIT 1", (time.time(),)
        )
        return row is not None

    def _lease(self, limit: int) -> list[Delivery]:
        now = time.time()
        token = secrets.token_hex(8)
        with self.file.tx(durable=False) as conn:
            rows = conn.execute(
                "UPDATE queue SET available_at = ?, attempts = attempts + 1, lease = ?"
                " WHERE seq IN (SELECT seq FROM queue WHERE available_at <= ?"
                " ORDER BY available_at, seq LIMIT ?)"
                " RETURNING seq, body, attributes, published_at, attempts, last_error",
                (now + self.policy.ack_deadline_seconds, token, now, limit),
            ).fetchall()
        deliveries = [
            _delivery(f"{seq}:{token}", seq, body, attrs, published, attempts, last_error)
            for seq, body, attrs, published, attempts, last_error in sorted(rows)
        ]
        self._in_flight.update(d.handle for d in deliveries)
        return deliveries

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_lease: dict[str, list[int]] = {}
        for delivery in deliveries:
            seq, lease = _key(delivery)
            by_lease.setdefault(lease, []).append(seq)
        with self._settling(deliveries), self.file.tx(durable=False) as conn:
            for lease, seqs in by_lease.items():
                marks = ", ".join("?" * len(seqs))
                conn.execute(
                    f"DELETE FROM queue WHERE lease = ? AND seq IN ({marks})",  # noqa: S608 - only placeholders  # nosec B608
                    (lease, *seqs),
                )

    def nack(self, deliveries: Sequence[Delivery], *, reason: str, delay: float) -> None:
        available = time.time() + delay
        with self._settling(deliveries), self.file.tx() as conn:
            conn.executemany(
                "UPDATE queue SET available_at = ?, lease = NULL, last_error = ?"
                " WHERE seq = ? AND lease = ?",
                [(available, reason[:MAX_REASON], *_key(d)) for d in deliveries],
            )

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        now = time.time()
        with self._settling(deliveries), self.file.tx() as conn:
            for delivery in deliveries:
                seq, lease = _key(delivery)
                # The attributes as delivered (with the id the worker gave a message that
                # had none); a row whose attributes could not be read keeps them as written.
                attributes = None if delivery.defect else orjson.dumps(delivery.attributes)
                move_to_dead_letters(
                    conn, seq, reason, delivery.delivery_attempt, now, lease, attributes
                )

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
