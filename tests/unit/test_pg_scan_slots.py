"""Filtered pages on PostgreSQL's page-read pool leave one connection to the other reads.

The statements are stood in for by ``_one`` (a filtered page may scan for seconds; here
it waits until released), so that what is checked is the admission, not PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from latam.filters import parse_filters
from latam.storage.port import PageRequest
from latam.storage.server_pages import AsyncPgPages

FILTERED = PageRequest(
    topic_id=1,
    limit=10,
    max_bytes=1 << 20,
    filters=parse_filters([("data.n", "eq.5")], reserved=()),
)
PLAIN = PageRequest(topic_id=1, limit=10, max_bytes=1 << 20)
EMPTY_PAGE = (b"[]", 0, 0, None, None, 1)
PAGE_VALUES = {"topic", "after", "probe", "limit", "budget"}


class Reads(AsyncPgPages):
    def __init__(self, max_size: int) -> None:
        super().__init__("postgresql://unused", max_size=max_size, timeout=1)
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def _open(self) -> Any:
        return None

    async def _one(self, query: str, values: Any) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if set(values) - PAGE_VALUES:  # a filter's values: it scans until released
                await self.release.wait()
            return EMPTY_PAGE
        finally:
            self.running -= 1


@pytest.mark.parametrize(("size", "scans"), [(1, 1), (2, 1), (4, 3), (8, 7)])
def test_filtered_pages_hold_all_but_one_connection(size: int, scans: int) -> None:
    async def scenario() -> None:
        reads = Reads(size)
        filtered = [asyncio.create_task(reads.page(FILTERED, heavy=False)) for _ in range(size + 3)]
        await asyncio.sleep(0.05)
        assert reads.running == scans
        # A plain page is not queued behind them.
        page = await asyncio.wait_for(reads.page(PLAIN, heavy=False), 1)
        assert page.rows == 0
        reads.release.set()
        await asyncio.wait_for(asyncio.gather(*filtered), 1)
        assert reads.most == scans + 1  # the plain page beside the scans

    asyncio.run(scenario())
