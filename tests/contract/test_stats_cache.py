"""Kept stats answers on every store (and the fake): ``stats_version`` moves with every
change to a topic's stats, and only then, and the service's kept answers
(``service.StatsCache``) are always what a new read gives: after new rows, duplicates,
expiry, a rename, a new topic and a deleted one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import update

from latam import metrics
from latam.api.stats import all_stats_body, buckets_json
from latam.domain import NewMessage
from latam.errors import NotFound
from latam.service import Service
from latam.storage.port import Store
from latam.storage.repository import SqlStore
from latam.storage.schema import rollup_build
from tests.contract.conftest import AnyStore
from tests.databases import STORES

START = datetime(2026, 11, 1, 23, 58, 30, tzinfo=UTC)


def write(store: Store, topic_id: int, name: str, ids: range) -> None:
    store.write_messages(
        [
            (topic_id, NewMessage(name, f"m{i}", f'{{"i":{i}}}', {}, START + timedelta(seconds=i)))
            for i in ids
        ]
    )


def test_the_version_moves_with_every_change_and_only_then(store: AnyStore) -> None:
    a, b = store.create_topic("a").id, store.create_topic("b").id
    version = store.stats_version
    assert version(a) == ((a, 0),)
    assert version(None) == ((a, 0), (b, 0))
    write(store, a, "a", range(10))
    after_write = version(a)
    assert after_write != ((a, 0),)
    assert version(b) == ((b, 0),)
    write(store, a, "a", range(10))  # every id already stored: nothing changed
    assert version(a) == after_write
    write(store, a, "a", range(5, 12))  # two of them new
    after_more = version(a)
    assert after_more != after_write
    assert store.expire(a, before=START, limit=100) == 0  # nothing that old
    assert version(a) == after_more
    assert store.expire(a, before=START + timedelta(seconds=3), limit=100) == 3
    after_expiry = version(a)
    assert after_expiry != after_more
    everything = version(None)
    store.rename_topic(b, "b2")  # /v1/stats names it
    assert version(b) != ((b, 0),)
    assert version(None) != everything
    everything = version(None)
    c = store.create_topic("c").id
    assert version(None) == (*everything, (c, 0))
    store.delete_topic(b)
    assert version(b) == ()
    assert version(None) == (*after_expiry, (c, 0))


def hits() -> float:
    return metrics.STATS_CACHE.labels("hit")._value.get()  # type: ignore[no-any-return]


def test_kept_answers_are_what_a_new_read_gives(service: Service) -> None:
    store = service.store
    a, b = store.create_topic("a").id, store.create_topic("b").id
    ranges: list[dict[str, Any]] = [
        {"bucket": "minute"},
        {"bucket": "hour", "since": START, "until": START + timedelta(days=1)},
        {"bucket": "minute", "since": START + timedelta(seconds=30), "until": None},
    ]

    async def read_twice(call: Callable[[], Any]) -> Any:
        first = await call()
        before = hits()
        second = await call()
        assert second == first
        assert hits() == before + 1, "the second read was not the kept answer"
        return first

    async def check(expect_totals: Sequence[tuple[str, int]]) -> None:
        """Each answer twice (the second kept), and equal to the store's own."""
        for window in ranges:
            got = await read_twice(
                lambda w=window: service.read_topic_stats(buckets_json, topic_id=a, **w)
            )
            fresh = buckets_json(service.topic_stats(topic_id=a, **window))
            assert got == fresh, window
        got = await read_twice(lambda: service.read_all_stats(all_stats_body))
        totals = [(row["topic"], row["count"]) for row in orjson.loads(got)["data"]]
        assert totals == list(expect_totals)

    async def scenario() -> None:
        await check([("a", 0), ("b", 0)])
        write(store, a, "a", range(100))
        await check([("a", 100), ("b", 0)])
        write(store, a, "a", range(50))  # duplicates: the kept answers stay right
        await check([("a", 100), ("b", 0)])
        write(store, a, "a", range(100, 130))
        await check([("a", 130), ("b", 0)])
        assert store.expire(a, before=START + timedelta(seconds=45), limit=1_000) == 45
        await check([("a", 85), ("b", 0)])
        store.rename_topic(b, "b-renamed")
        await check([("a", 85), ("b-renamed", 0)])
        c = store.create_topic("c").id
        await check([("a", 85), ("b-renamed", 0), ("c", 0)])
        store.delete_topic(c)
        await check([("a", 85), ("b-renamed", 0)])
        store.delete_topic(a)
        with pytest.raises(NotFound):
            await service.read_topic_stats(buckets_json, topic_id=a, bucket="hour")
        await service.page_reader.aclose()

    asyncio.run(scenario())


def test_nothing_is_kept_with_the_cache_off(store: AnyStore) -> None:
    from tests.fakes import MemoryBroker

    service = Service(
        store=store, broker=MemoryBroker(), max_message_bytes=1 << 18, stats_cache_bytes=0
    )
    a = store.create_topic("a").id
    write(store, a, "a", range(3))

    async def twice() -> None:
        before = hits()
        for _ in range(2):
            await service.read_topic_stats(buckets_json, topic_id=a, bucket="hour")
        assert hits() == before

    asyncio.run(twice())
    if isinstance(store, SqlStore):
        assert store.stats_version(a) is not None  # the store still answers


def test_one_batch_of_several_topics_raises_each_of_them(store: AnyStore) -> None:
    ids = [store.create_topic(f"t{n}").id for n in range(3)]
    before = store.stats_version(None)
    store.write_messages(
        [
            (topic_id, NewMessage(f"t{n}", f"m{i}", "{}", {}, START))
            for n, topic_id in enumerate(ids[:2])
            for i in range(3)
        ]
    )
    after = store.stats_version(None)
    assert before is not None
    assert after is not None
    changed = {topic_id for (topic_id, v), (_, w) in zip(before, after, strict=True) if v != w}
    assert changed == set(ids[:2])


@pytest.mark.parametrize("service", STORES, indirect=True)  # the fake has no rollups
def test_no_version_while_the_rollups_are_built(service: Service) -> None:
    """Rows stored before the rollups (revision 0005) are added without raising versions:
    nothing may be kept until they are all in, by the store or by its own reader."""
    store = service.store
    assert isinstance(store, SqlStore)
    topic = store.create_topic("a").id
    write(store, topic, "a", range(3))
    with store.engine.begin() as conn:
        conn.execute(update(rollup_build).values(horizon_seq=10**9, built_to_seq=0))
    building = SqlStore(store.engine)
    assert building.stats_version(topic) is None
    assert building.stats_version(None) is None

    async def reader_version() -> None:
        fresh = Service(
            store=building,
            broker=service.broker,
            max_message_bytes=1 << 18,
            pages=service.pages,
            stats=service.stats,
        )
        try:
            before = hits()
            for _ in range(3):
                await fresh.read_topic_stats(buckets_json, topic_id=topic, bucket="hour")
            assert hits() == before
            if service.stats is not None:  # the store's own reader (not MySQL's: none)
                assert await service.stats.stats_version(topic) is None
        finally:
            await service.page_reader.aclose()

    asyncio.run(reader_version())
