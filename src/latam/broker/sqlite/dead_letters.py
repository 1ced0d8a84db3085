"""The embedded queue's dead letters: the ``dead_letters`` table of the queue file.

Ids are the table's row ids; listing pages by id. Replay moves rows back into ``queue``
in one transaction (the originals keep their attributes, so their identity), purge
deletes them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from latam.broker.base import DeadLetter, read_attributes, within_bytes
from latam.broker.sqlite.admin import HELD_BY, QueueFile, read_body, read_time
from latam.domain import ATTR_MESSAGE_ID, ATTR_TOPIC
from latam.errors import NotFound

MAX_ROW_ID = 2**63 - 1
MAX_REASON = 1000  # characters of a reason kept
COLUMNS = "id, body, attributes, published_at, reason, attempts, dead_at"
# Ids of a page: rows after ?, ? at most, up to the one whose body reaches ? bytes (what
# ``within_bytes`` then cuts, attributes counted, is never more than this).
WITHIN_BYTES = (
    "SELECT id FROM (SELECT id, sum(weight) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED"
    " PRECEDING AND 1 PRECEDING) AS before FROM (SELECT id, length(body) AS weight"
    " FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?)) WHERE coalesce(before, 0) < ?"
)


def move_to_dead_letters(
    conn: sqlite3.Connection,
    seq: int,
    reason: str,
    attempts: int,
    now: float,
    lease: str,
    attributes: bytes | None = None,
) -> None:
    """Move queue row ``seq`` aside while ``lease`` still holds it; ``attributes``
    replace the row's own when given."""
    moved = conn.execute(
        "INSERT INTO dead_letters (body, attributes, published_at, reason, attempts, dead_at)"  # noqa: S608 - constant predicate  # nosec B608
        " SELECT body, coalesce(?, attributes), published_at, ?, ?, ? FROM queue"
        f" WHERE seq = ? AND {HELD_BY}",
        (
            None if attributes is None else attributes.decode(),
            reason[:MAX_REASON],
            attempts,
            now,
            seq,
            lease,
            lease,
        ),
    ).rowcount
    if moved:
        conn.execute("DELETE FROM queue WHERE seq = ?", (seq,))


class DeadLetterTable:
    """List, inspect, replay and purge the ``dead_letters`` table."""

    def __init__(self, file: QueueFile) -> None:
        self.file = file

    def list_letters(self, *, limit: int, after: str | None, max_bytes: int) -> list[DeadLetter]:
        after_id = _row_id(after) or 0
        # The byte budget is applied on lengths alone: bodies past it are never read.
        rows = self.file.read_all(
            f"SELECT {COLUMNS} FROM dead_letters WHERE id IN ({WITHIN_BYTES}) ORDER BY id",  # noqa: S608 - constant columns  # nosec B608
            (after_id, limit, max_bytes),
        )
        return within_bytes(map(_dead_letter, rows), max_bytes)  # type: ignore[arg-type]

    def get(self, dead_letter_id: str) -> DeadLetter:
        row_id = _row_id(dead_letter_id)
        row = None
        if row_id is not None:
            row = self.file.read_one(
                f"SELECT {COLUMNS} FROM dead_letters WHERE id = ?",  # noqa: S608 - constant columns  # nosec B608
                (row_id,),
            )
        if row is None:
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return _dead_letter(row)  # type: ignore[arg-type]

    def replay(self, ids: Sequence[str] | None) -> int:
        now = time.time()
        where, params = _id_filter(ids)
        with self.file.tx() as conn:
            conn.execute(
                "INSERT INTO queue (body, attributes, published_at, available_at)"  # noqa: S608 - only placeholders  # nosec B608
                f" SELECT body, attributes, published_at, ? FROM dead_letters {where}"
                " ORDER BY id",
                (now, *params),
            )
            return conn.execute(f"DELETE FROM dead_letters {where}", params).rowcount  # noqa: S608 - only placeholders  # nosec B608

    def purge(self, ids: Sequence[str] | None) -> int:
        where, params = _id_filter(ids)
        with self.file.tx() as conn:
            return conn.execute(f"DELETE FROM dead_letters {where}", params).rowcount  # noqa: S608 - only placeholders  # nosec B608

    def count(self) -> int:
        with self.file.tx() as conn:
            return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


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


def _dead_letter(row: tuple[int, object, object, object, str, int, float]) -> DeadLetter:
    """A row as a dead letter; the columns a producer wrote are read as leniently as on
    delivery (the body is kept byte for byte, the reason says what was wrong)."""
    dl_id, body, attrs, published, reason, attempts, dead_at = row
    attributes, _ = read_attributes(attrs)
    data, _ = read_body(body)
    dead_lettered_at, _ = read_time(dead_at)
    published_at, defect = read_time(published)
    return DeadLetter(
        id=str(dl_id),
        topic=attributes.get(ATTR_TOPIC, ""),
        message_id=attributes.get(ATTR_MESSAGE_ID, ""),
        body=data,
        attributes=attributes,
        reason=reason,
        delivery_attempts=attempts,
        published_at=dead_lettered_at if defect else published_at,
        dead_lettered_at=dead_lettered_at,
    )
