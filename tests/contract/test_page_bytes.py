"""Pages bounded in bytes on every store and both page paths: whatever ``limit`` asks, a
page stops after the row that brings its data and attributes to the budget, always holds
at least one row, and its cursor continues with the next row, none skipped or repeated."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from latam.domain import NewMessage
from latam.service import Service
from tests.contract.conftest import read_json_pages

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
    for json in (False, True):
        if json:
            pages = asyncio.run(read_json_pages(service, topic, limit=1000, since=since))
            walked = [[row["id"] for row in page] for page in pages]
        else:
            walked, cursor = [], None
            while True:
                page = service.read_messages(topic_id=topic, limit=1000, cursor=cursor, since=since)
                walked.append([m.message_id for m in page.items])
                if (cursor := page.next_cursor) is None:
                    break
        seen: list[str] = []
        for ids in walked:
            assert ids, "a page holds at least one message"
            assert sum(sizes[mid] for mid in ids[:-1]) < BUDGET, "only the last row may cross"
            seen.extend(ids)
        assert len(walked) > 3
        assert sorted(seen) == sorted(sizes), "every row once"
        assert len(seen) == len(set(seen))


def test_http_pages_are_cut_by_the_budget_not_by_the_small_page_try(service: Service) -> None:
    """Over HTTP, a page bigger than what is tried first (``SMALL_PAGE_BYTES``) comes
    whole: only ``LATAM_MAX_PAGE_BYTES`` cuts it, on every store."""
    from fastapi.testclient import TestClient

    from latam.api.app import create_app
    from latam.keys import KeyVerifier
    from latam.service import SMALL_PAGE_BYTES
    from latam.settings import Settings

    budget = service.max_page_bytes = 4 * SMALL_PAGE_BYTES
    topic = service.create_topic(name="wide")
    rows = [
        (topic.id, NewMessage("wide", f"w{i:02}", '{"p":"' + "y" * 30_000 + '"}', {}, BASE))
        for i in range(30)
    ]
    service.store.write_messages(rows)
    size = len(rows[0][1].data) + 2  # data and "{}" attributes
    settings = Settings()
    keys = KeyVerifier(service.store)  # type: ignore[arg-type]  # auth is off on loopback
    seen: list[str] = []
    cursor = ""
    with TestClient(create_app(service, settings, keys)) as client:
        while True:
            page = client.get(f"/v1/topics/{topic.id}/messages?limit=1000{cursor}").json()
            ids = [row["id"] for row in page["data"]]
            seen.extend(ids)
            if page["next_cursor"] is None:
                break
            assert (len(ids) - 1) * size < budget <= len(ids) * size, "cut by the budget only"
            cursor = f"&cursor={page['next_cursor']}"
    assert seen == [f"w{i:02}" for i in range(30)]


class CountingSlots:
    """Stands in for the API's bulkhead and counts who waits for a slot."""

    def __init__(self) -> None:
        self.entered = 0

    async def __aenter__(self) -> None:
        self.entered += 1

    async def __aexit__(self, *_: object) -> None:
        return None


def test_only_pages_cut_by_the_small_budget_wait_for_a_slot(service: Service) -> None:
    """A full page of small messages (its JSON far past ``SMALL_PAGE_BYTES``, its data
    not) is served at once; a page of big messages waits for a bulkhead slot."""
    from fastapi.testclient import TestClient

    from latam.api.app import create_app
    from latam.keys import KeyVerifier
    from latam.service import SMALL_PAGE_BYTES
    from latam.settings import Settings

    tiny = service.create_topic(name="tiny")
    service.store.write_messages(
        [
            (tiny.id, NewMessage("tiny", f"t{i}", '{"flight":"LA800"}', {}, BASE))
            for i in range(1000)
        ]
    )
    wide = service.create_topic(name="wide")
    body = '{"p":"' + "z" * SMALL_PAGE_BYTES + '"}'
    service.store.write_messages(
        [(wide.id, NewMessage("wide", f"w{i}", body, {}, BASE)) for i in range(3)]
    )
    settings = Settings()
    keys = KeyVerifier(service.store)  # type: ignore[arg-type]  # auth is off on loopback
    app = create_app(service, settings, keys)
    slots = app.state.page_slots = CountingSlots()
    with TestClient(app) as client:
        page = client.get(f"/v1/topics/{tiny.id}/messages?limit=1000")
        assert len(page.content) > SMALL_PAGE_BYTES
        assert len(page.json()["data"]) == 1000
        assert slots.entered == 0
        page = client.get(f"/v1/topics/{wide.id}/messages?limit=1000")
        assert len(page.json()["data"]) == 3
        assert slots.entered == 1
