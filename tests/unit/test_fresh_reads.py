"""``service.FreshReads``: callers at once share a read, and never one that started before
they called; ``service.StatsCache``: bounded in bytes and in age."""

from __future__ import annotations

import asyncio
import time

import pytest

from latam.errors import StoreUnavailable
from latam.service import FreshReads, StatsCache


class Reads:
    """A read that counts its starts and waits for ``release`` before answering."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.started += 1
        number = self.started
        await self.release.wait()
        return number


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_callers_at_once_share_one_read() -> None:
    async def scenario() -> None:
        fresh, reads = FreshReads(), Reads()
        callers = [asyncio.create_task(fresh.read("k", reads)) for _ in range(8)]
        await settle()
        reads.release.set()
        assert await asyncio.gather(*callers) == [1] * 8
        assert reads.started == 1

    asyncio.run(scenario())


def test_a_caller_during_a_read_gets_the_next_one() -> None:
    async def scenario() -> None:
        fresh, reads = FreshReads(), Reads()
        first = asyncio.create_task(fresh.read("k", reads))
        await settle()
        assert reads.started == 1  # in progress
        later = [asyncio.create_task(fresh.read("k", reads)) for _ in range(5)]
        await settle()
        assert reads.started == 1  # the next read waits for the one in progress
        reads.release.set()
        assert await first == 1
        assert await asyncio.gather(*later) == [2] * 5  # started after they called
        assert reads.started == 2
        assert await fresh.read("k", reads) == 3  # nothing in progress: a read of its own

    asyncio.run(scenario())


def test_keys_do_not_share() -> None:
    async def scenario() -> None:
        fresh, reads = FreshReads(), Reads()
        a = asyncio.create_task(fresh.read("a", reads))
        b = asyncio.create_task(fresh.read("b", reads))
        await settle()
        assert reads.started == 2
        reads.release.set()
        assert sorted([await a, await b]) == [1, 2]

    asyncio.run(scenario())


def test_a_failed_read_fails_every_caller_and_the_next_call_reads_again() -> None:
    async def scenario() -> None:
        fresh = FreshReads()
        calls = 0

        async def failing() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            raise StoreUnavailable("down")

        callers = [asyncio.create_task(fresh.read("k", failing)) for _ in range(3)]
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert calls == 1
        with pytest.raises(StoreUnavailable):
            await fresh.read("k", failing)
        assert calls == 2

    asyncio.run(scenario())


def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    async def scenario() -> None:
        fresh, reads = FreshReads(), Reads()
        gone = asyncio.create_task(fresh.read("k", reads))
        staying = asyncio.create_task(fresh.read("k", reads))
        await settle()
        gone.cancel()
        await settle()
        reads.release.set()
        assert await staying == 1
        assert gone.cancelled()

    asyncio.run(scenario())


def test_a_read_cancelled_while_queued_cancels_its_callers_and_frees_its_key() -> None:
    async def scenario() -> None:
        fresh, reads = FreshReads(), Reads()
        first = asyncio.create_task(fresh.read("k", reads))
        await settle()
        running = set(fresh._tasks)
        queued = asyncio.create_task(fresh.read("k", reads))
        await settle()
        (waiting,) = fresh._tasks - running  # the next read, waiting for the first
        waiting.cancel()  # as when the event loop closes
        await settle()
        assert queued.cancelled()
        reads.release.set()
        assert await first == 1
        assert await fresh.read("k", reads) == 2  # the key is free again
        assert not fresh._queued
        assert not fresh._running

    asyncio.run(scenario())


def test_no_answer_is_kept_past_its_age() -> None:
    cache = StatsCache(1 << 20, max_seconds=0.05)
    cache.put("k", ((1, 1),), b"body")
    assert cache.get("k", ((1, 1),)) == b"body"
    assert cache.get("k", ((1, 2),)) is None  # its topic moved on
    time.sleep(0.1)
    assert cache.get("k", ((1, 1),)) is None


def test_an_answer_bigger_than_the_cache_is_not_kept() -> None:
    cache = StatsCache(4096)
    cache.put("big", ((1, 1),), b"x" * 8192)
    assert cache.get("big", ((1, 1),)) is None
    for n in range(100):  # small ones push the oldest out, never past the bound
        cache.put(n, ((1, 1),), b"y" * 100)
    assert cache.get(99, ((1, 1),)) == b"y" * 100
    assert cache.get(0, ((1, 1),)) is None
