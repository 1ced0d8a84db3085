"""Analytics contract: every store returns the same golden buckets and totals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.port import Bucket, TopicTotals
from latam.storage.repository import SqlStore
from tests.databases import STORES, temporary_database
from tests.fakes import MemoryStore

# The SQL adapters and the in-memory fake of tests/fakes.py, so the fake cannot drift.
AnyStore = SqlStore | MemoryStore

# Session time zones far from UTC: the buckets must not move with them.
SESSION_ZONE = {"postgresql": "SET TIME ZONE 'Asia/Kathmandu'", "mysql": "SET time_zone = '+05:45'"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (message id, published_at, data): microseconds either side of the midnight boundary,
# one message exactly on it, and a multi-byte character so that bytes != characters.
TOPIC_A = [
    ("1", at("2026-03-01T23:59:59.999999"), '{"n":1}'),  # 7 bytes
    ("2", at("2026-03-02T00:00:00"), '{"n":22}'),  # 8 bytes, on the boundary
    ("3", at("2026-03-02T00:00:59.999999"), '{"n":333}'),  # 9 bytes
    ("4", at("2026-03-02T00:01:00.000001"), '{"ciudad":"São"}'),  # 17 bytes
    ("5", at("2026-03-02T01:30:00.500000"), "{}"),  # 2 bytes
    ("6", at("2026-03-03T12:00:00"), '{"x":[1,2,3]}'),  # 13 bytes
]
TOPIC_B = [("1", at("2026-03-02T00:00:30"), '{"b":1}')]  # 7 bytes

GOLDEN = {
    "minute": [
        ("2026-03-01T23:59:00", 1, 7),
        ("2026-03-02T00:00:00", 2, 17),
        ("2026-03-02T00:01:00", 1, 17),
        ("2026-03-02T01:30:00", 1, 2),
        ("2026-03-03T12:00:00", 1, 13),
    ],
    "hour": [
        ("2026-03-01T23:00:00", 1, 7),
        ("2026-03-02T00:00:00", 3, 34),
        ("2026-03-02T01:00:00", 1, 2),
        ("2026-03-03T12:00:00", 1, 13),
    ],
    "day": [
        ("2026-03-01T00:00:00", 1, 7),
        ("2026-03-02T00:00:00", 4, 36),
        ("2026-03-03T00:00:00", 1, 13),
    ],
}


def open_store(kind: str, url: str, tmp_path: Path) -> SqlStore:
    engine = build_engine(url, Settings(data_dir=tmp_path))
    if kind in SESSION_ZONE:

        @event.listens_for(engine, "connect")
        def _zone(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(SESSION_ZONE[kind])
            dbapi_connection.commit()

    migrate.upgrade(engine)
    return SqlStore(engine)


@pytest.fixture(params=[*STORES, "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    with temporary_database(request.param, tmp_path) as url:
        sql_store = open_store(request.param, url, tmp_path)
        yield sql_store
        sql_store.close()


@pytest.fixture
def topics(store: AnyStore) -> dict[str, int]:
    ids = {name: store.create_topic(name).id for name in ("a", "b", "empty")}
    for name, rows in (("a", TOPIC_A), ("b", TOPIC_B)):
        store.write_messages(
            [
                (ids[name], NewMessage(topic=name, message_id=mid, data=data, published_at=ts))
                for mid, ts, data in rows
            ]
        )
    return ids


def buckets(store: AnyStore, topic_id: int, bucket: str, **window: Any) -> list[tuple[Any, ...]]:
    found = store.topic_stats(
        topic_id,
        bucket=bucket,
        since=window.get("since"),
        until=window.get("until"),
        limit=window.get("limit", 100),
    )
    assert all(isinstance(b, Bucket) and b.start.tzinfo is not None for b in found)
    return [(b.start.isoformat().removesuffix("+00:00"), b.count, b.bytes) for b in found]


@pytest.mark.parametrize("bucket", ["minute", "hour", "day"])
def test_buckets_match_the_golden_list(
    store: AnyStore, topics: dict[str, int], bucket: str
) -> None:
    assert buckets(store, topics["a"], bucket) == GOLDEN[bucket]
    assert buckets(store, topics["b"], bucket)[0][1:] == (1, 7)


def test_since_is_inclusive_and_until_exclusive(store: AnyStore, topics: dict[str, int]) -> None:
    window = {"since": at("2026-03-02T00:00:00"), "until": at("2026-03-02T01:30:00.5")}
    assert buckets(store, topics["a"], "hour", **window) == [("2026-03-02T00:00:00", 3, 34)]
    before_midnight = buckets(store, topics["a"], "day", until=at("2026-03-02T00:00:00"))
    assert before_midnight == [("2026-03-01T00:00:00", 1, 7)]
    from_noon = buckets(store, topics["a"], "minute", since=at("2026-03-03T12:00:00"))
    assert from_noon == [("2026-03-03T12:00:00", 1, 13)]
    nothing = at("2026-03-02T00:00:00")
    assert buckets(store, topics["a"], "day", since=nothing, until=nothing) == []


def test_limit_keeps_the_earliest_buckets(store: AnyStore, topics: dict[str, int]) -> None:
    assert buckets(store, topics["a"], "minute", limit=2) == GOLDEN["minute"][:2]


def test_topic_without_messages_has_no_buckets(store: AnyStore, topics: dict[str, int]) -> None:
    for bucket in GOLDEN:
        assert buckets(store, topics["empty"], bucket) == []


def test_totals_per_topic(store: AnyStore, topics: dict[str, int]) -> None:
    assert store.all_stats() == [
        TopicTotals(
            topics["a"], "a", 6, 56, at("2026-03-01T23:59:59.999999"), at("2026-03-03T12:00:00")
        ),
        TopicTotals(topics["b"], "b", 1, 7, at("2026-03-02T00:00:30"), at("2026-03-02T00:00:30")),
        TopicTotals(topics["empty"], "empty", 0, 0, None, None),
    ]


def test_totals_of_an_empty_store(store: AnyStore) -> None:
    assert store.all_stats() == []
