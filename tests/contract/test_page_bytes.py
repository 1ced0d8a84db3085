"""Pages bounded in bytes on every store and both page paths: whatever ``limit`` asks, a
page stops after the row that brings its data and attributes to the budget, always holds
at least one row, and its cursor continues with the next row, none skipped or repeated."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from latam.domain import NewMessage
from latam.service import Service

BUDGET = 64 * 1024
BASE = datetime(2026, 6, 1, tzinfo=UTC)


def load(service: Service) -> dict[str, int]:
    """Messages from 10 bytes to 3x the budget; their sizes as stored."""
    rnd = random.Random(7)
    topic = service.create_topic(name="big")
    sizes = {}
    for batch in range(6):
        rows = []
        for i in range(10):
            mid = f"m{batch}-{i}"
            body = '{"p":"' + "x" * rnd.choice([10, 2_000, 30_000, 3 * BUDGET]) + '"}'
            attrs = {"k": "v" * rnd.randrange(100)}
            rows.append(
                (topic.id, NewMessage("big", mid, body, attrs, BASE + timedelta(seconds=i)))
            )
            sizes[mid] = len(body) + len(orjson.dumps(attrs))
        service.store.write_messages(rows)
    return sizes


@pytest.mark.parametrize("window", [False, True])
def test_pages_stop_at_the_byte_budget(service: Service, window: bool) -> None:
    service.max_page_bytes = BUDGET
    sizes = load(service)
    topic = service.store.topic_ids(["big"])["big"]
    since = BASE if window else None
    paths = [False, True] if service.pages is not None else [False]
    for json in paths:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            if json:
                built = service.read_messages_json(
                    topic_id=topic, limit=1000, cursor=cursor, since=since
                )
                assert built is not None
                array, cursor, _tail = built
                ids = [row["id"] for row in orjson.loads(array)]
            else:
                page = service.read_messages(topic_id=topic, limit=1000, cursor=cursor, since=since)
                ids, cursor = [m.message_id for m in page.items], page.next_cursor
            pages += 1
            assert ids, "a page holds at least one message"
            assert sum(sizes[mid] for mid in ids[:-1]) < BUDGET, "only the last row may cross"
            seen.extend(ids)
            if cursor is None:
                break
        assert sorted(seen) == sorted(sizes), "every row once"
        assert len(seen) == len(set(seen))
        assert pages > 3
