"""The embedded queue's range leases, on a real queue file.

Rows never delivered are leased by range (one ``leases`` row per batch, the rows left
as written); rows handed back, or whose range lease ran out, are leased one by one. The
contract suite (tests/contract/test_broker.py) checks what every broker owes; this
checks what the range leases add: attempts counted, a late ack harmless, producers that
write odd rows, and files of the earlier layout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from latam.broker.base import Delivery, DeliveryPolicy
from latam.broker.sqlite import SqliteBroker
from latam.broker.sqlite import adapter as queue_adapter
from latam.domain import OutboundMessage
from latam.errors import BrokerUnavailable

DEADLINE = 0.5  # seconds of a lease in these tests


def outbound(i: int) -> OutboundMessage:
    return OutboundMessage(
        topic="orders",
        message_id=f"m-{i}",
        body=orjson.dumps({"n": i}),
        attributes={},
        published_at=datetime.now(UTC),
    )


def numbers(deliveries: list[Delivery]) -> list[int]:
    return sorted(orjson.loads(d.body)["n"] for d in deliveries)


def pull(broker: SqliteBroker, count: int, timeout: float = 5.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += broker.pull(max_messages=count - len(got), timeout=0.2)
    return got


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "broker.db"


@pytest.fixture
def broker(path: Path) -> Iterator[SqliteBroker]:
    made = SqliteBroker(path, DeliveryPolicy(ack_deadline_seconds=DEADLINE))
    yield made
    made.close()


def rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


def insert_raw(path: Path, body: bytes, available_at: object, seq: int | None = None) -> None:
    """What a producer that never heard of latam writes, with an explicit ``seq`` if given."""
    attributes = orjson.dumps({"topic": "orders"}).decode()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO queue (seq, body, attributes, published_at, available_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (seq, body, attributes, time.time(), available_at),
        )


def test_a_batch_is_leased_as_one_range_and_its_rows_are_left_as_written(
    path: Path, broker: SqliteBroker
) -> None:
    broker.publish([outbound(i) for i in range(50)])
    got = pull(broker, 50)
    assert numbers(got) == list(range(50))
    assert {d.delivery_attempt for d in got} == {1}
    assert rows(path, "SELECT count(*) FROM leases") == [(1,)]
    assert rows(path, "SELECT count(*) FROM queue WHERE lease IS NULL AND attempts = 0") == [(50,)]
    assert broker.pull(max_messages=10, timeout=0.1) == []  # leased: invisible
    broker.ack(got)
    assert rows(path, "SELECT count(*) FROM queue") == [(0,)]
    assert rows(path, "SELECT count(*) FROM leases") == [(0,)], "a settled range lease stays"


def test_an_expired_range_comes_back_counted_and_its_late_ack_removes_nothing(
    path: Path, broker: SqliteBroker
) -> None:
    broker.publish([outbound(i) for i in range(10)])
    first = pull(broker, 10)
    time.sleep(DEADLINE + 0.1)
    other = SqliteBroker(path, DeliveryPolicy(ack_deadline_seconds=30))
    try:
        again = pull(other, 10)
        assert numbers(again) == list(range(10))
        assert {d.delivery_attempt for d in again} == {2}
        broker.ack(first)  # the first consumer, too late: another one holds them now
        assert rows(path, "SELECT count(*) FROM queue") == [(10,)]
        other.ack(again)
        assert rows(path, "SELECT count(*) FROM queue") == [(0,)]
        assert rows(path, "SELECT count(*) FROM leases") == [(0,)]
    finally:
        other.close()


def test_a_late_ack_nobody_overtook_still_settles(path: Path, broker: SqliteBroker) -> None:
    broker.publish([outbound(i) for i in range(3)])
    got = pull(broker, 3)
    time.sleep(DEADLINE + 0.1)
    broker.ack(got)  # expired, but no consumer took them meanwhile: the work is done
    assert rows(path, "SELECT count(*) FROM queue") == [(0,)]
    assert broker.pull(max_messages=10, timeout=0.3) == []


def test_one_range_settled_three_ways(path: Path, broker: SqliteBroker) -> None:
    broker.publish([outbound(i) for i in range(8)])
    got = sorted(pull(broker, 8), key=lambda d: orjson.loads(d.body)["n"])
    broker.ack(got[0:3])
    broker.nack(got[3:5], reason="store_unavailable", delay=0.0)
    broker.dead_letter(got[5:6], reason="invalid_json")
    assert rows(path, "SELECT count(*) FROM leases") == [(1,)], "two rows are still held"
    back = pull(broker, 2)
    assert numbers(back) == [3, 4]
    assert [(d.delivery_attempt, d.last_error) for d in back] == [(2, "store_unavailable")] * 2
    broker.ack(back)
    (letter,) = broker.list_dead_letters(limit=10)
    assert (letter.reason, letter.delivery_attempts) == ("invalid_json", 1)
    broker.ack(got[6:7])
    assert rows(path, "SELECT count(*) FROM leases") == [(1,)]
    time.sleep(DEADLINE + 0.1)
    last = pull(broker, 1)  # the one never settled
    assert [(numbers(last), last[0].delivery_attempt)] == [([7], 2)]
    broker.ack(last)
    assert rows(path, "SELECT count(*) FROM leases") == [(0,)]
    assert rows(path, "SELECT count(*) FROM queue") == [(0,)]


def test_a_row_written_for_later_waits_without_holding_up_the_rest(
    path: Path, broker: SqliteBroker
) -> None:
    broker.ping()  # the file and its schema exist
    broker.publish([outbound(0)])
    insert_raw(path, b'{"n": 1}', time.time() + 1.5)
    insert_raw(path, b'{"n": 2}', "soon")  # no time at all: delivered now, not stuck
    broker.publish([outbound(3)])
    first = pull(broker, 3)
    assert numbers(first) == [0, 2, 3]
    broker.ack(first)
    assert broker.pull(max_messages=10, timeout=0.5) == []
    later = pull(broker, 1, timeout=5)
    assert [(numbers(later), later[0].delivery_attempt)] == [([1], 1)]
    broker.ack(later)


def test_a_row_written_behind_the_cursor_is_refused_and_nothing_else_changes(
    path: Path, broker: SqliteBroker
) -> None:
    """A row written with an explicit ``seq`` the cursor has passed would never be
    leased (or would look like part of a range lease): the producer gets an error."""
    broker.publish([outbound(i) for i in range(5)])
    held = sorted(pull(broker, 3), key=lambda d: orjson.loads(d.body)["n"])  # seq 1-3
    broker.ack(held[1:2])  # seq 2 is free again, inside a live range lease
    with pytest.raises(sqlite3.IntegrityError, match="not past the delivery cursor"):
        insert_raw(path, b'{"n": 100}', time.time(), seq=2)
    rest = pull(broker, 2)  # seq 4 and 5
    broker.ack(rest)
    with pytest.raises(sqlite3.IntegrityError, match="not past the delivery cursor"):
        insert_raw(path, b'{"n": 100}', time.time(), seq=4)  # behind, outside any lease
    insert_raw(path, b'{"n": 6}', time.time(), seq=1000)  # ahead of the cursor: fine
    last = pull(broker, 1)
    assert numbers(rest + last) == [3, 4, 6]
    broker.ack([held[0], held[2], *last])
    assert rows(path, "SELECT count(*) FROM queue") == [(0,)]
    assert rows(path, "SELECT count(*) FROM leases") == [(0,)]


def test_the_largest_seq_a_producer_can_write_stops_nothing_already_queued(
    path: Path, broker: SqliteBroker
) -> None:
    broker.publish([outbound(i) for i in range(3)])
    insert_raw(path, b'{"n": 3}', time.time(), seq=2**63 - 1)
    got = pull(broker, 4)
    assert numbers(got) == [0, 1, 2, 3]
    broker.ack(got)
    # SQLite has no seq left for a new row: the publisher is told, nothing is lost.
    with pytest.raises(BrokerUnavailable):
        broker.publish([outbound(4)])


def test_a_long_run_of_rows_for_later_does_not_hold_up_the_next_message(
    path: Path, broker: SqliteBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_adapter, "MAX_SCAN", 100)
    broker.ping()
    later = time.time() + 3600
    attributes = orjson.dumps({"topic": "orders"}).decode()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO queue (body, attributes, published_at, available_at) VALUES (?, ?, ?, ?)",
            [(b'{"n": -1}', attributes, time.time(), later)] * 1000,
        )
    broker.publish([outbound(0)])
    started = time.monotonic()
    got = pull(broker, 1, timeout=10)
    assert numbers(got) == [0]
    assert time.monotonic() - started < 5, "the rows for later were crossed one lease at a time"
    broker.ack(got)
    assert rows(path, "SELECT count(*) FROM queue WHERE lease = ''") == [(1000,)]


def test_consumers_sharing_the_file_never_get_the_same_message(path: Path) -> None:
    policy = DeliveryPolicy(ack_deadline_seconds=60)
    producer = SqliteBroker(path, policy)
    producer.publish([outbound(i) for i in range(2000)])
    seen: list[list[int]] = [[], [], []]
    start = threading.Barrier(3)

    def consume(slot: int) -> None:
        consumer = SqliteBroker(path, policy)
        consumer.ping()  # connected before the race starts
        start.wait(10)
        try:
            while got := consumer.pull(max_messages=37, timeout=0.5):
                seen[slot] += numbers(got)
                time.sleep(0.002)  # some work between lease and ack, as a worker has
                consumer.ack(got)
        finally:
            consumer.close()

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    producer.close()
    everything = seen[0] + seen[1] + seen[2]
    assert sorted(everything) == list(range(2000))
    assert all(seen), "a consumer got nothing: the test did not share the queue"


LAYOUT_0 = """
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    published_at REAL NOT NULL,
    available_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    last_error TEXT
);
CREATE INDEX queue_available ON queue (available_at, seq);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    published_at REAL NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
"""


def test_a_file_of_the_earlier_layout_is_taken_over_with_every_row(path: Path) -> None:
    """Rows as the earlier release left them: waiting, handed back (lease NULL, counted),
    leased and still held, leased and expired."""
    now = time.time()
    attributes = orjson.dumps({"topic": "orders"}).decode()
    with sqlite3.connect(path) as conn:
        conn.executescript(LAYOUT_0)
        conn.executemany(
            "INSERT INTO queue (body, attributes, published_at, available_at, attempts, lease,"
            " last_error) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (b'{"n": 0}', attributes, now, now, 0, None, None),  # waiting
                (b'{"n": 1}', attributes, now, now - 1, 2, None, "store_unavailable"),
                (b'{"n": 2}', attributes, now, now + 1.5, 1, "held", None),  # still leased
                (b'{"n": 3}', attributes, now, now - 1, 1, "gone", None),  # lease ran out
                (b'{"n": 5}', attributes, now, "soon", 0, None, None),  # no time: now
            ],
        )
    broker = SqliteBroker(path, DeliveryPolicy(ack_deadline_seconds=30))
    try:
        first = pull(broker, 4)
        assert sorted((numbers([d])[0], d.delivery_attempt) for d in first) == [
            (0, 1),
            (1, 3),
            (3, 2),
            (5, 1),
        ]
        broker.ack(first)
        assert broker.pull(max_messages=10, timeout=0.3) == []  # n=2 is still held
        held = pull(broker, 1, timeout=5)
        assert [(numbers(held), held[0].delivery_attempt)] == [([2], 2)]
        broker.ack(held)
        broker.publish([outbound(4)])
        assert numbers(pull(broker, 1)) == [4]
        assert rows(path, "PRAGMA user_version") == [(1,)]
        assert rows(path, "SELECT name FROM sqlite_master WHERE name = 'queue_available'") == []
    finally:
        broker.close()


def test_a_message_handed_back_by_a_worker_of_the_earlier_layout_is_delivered_again(
    path: Path, broker: SqliteBroker
) -> None:
    """Such a worker, still running on a file taken over, leases a row by rewriting it
    and hands it back by setting its lease to NULL: the row must not be left behind the
    cursor where no lease covers it."""
    broker.publish([outbound(i) for i in range(3)])
    broker.ack(pull(broker, 3))
    broker.publish([outbound(3)])
    now = time.time()
    with sqlite3.connect(path) as conn:  # the earlier layout's lease, then its nack
        conn.execute(
            "UPDATE queue SET available_at = ?, attempts = attempts + 1, lease = 'old'"
            " WHERE seq IN (SELECT seq FROM queue WHERE available_at <= ? LIMIT 1)",
            (now + 30, now),
        )
        conn.execute(
            "UPDATE queue SET available_at = ?, lease = NULL, last_error = 'store_unavailable'"
            " WHERE lease = 'old'",
            (now,),
        )
    got = pull(broker, 1)
    assert [(numbers(got), got[0].delivery_attempt, got[0].last_error)] == [
        ([3], 2, "store_unavailable")
    ]
    broker.ack(got)
    assert rows(path, "SELECT count(*) FROM queue") == [(0,)]
