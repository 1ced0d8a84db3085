"""Time-window pages on every store: each row of the window exactly once, in publish-time
order, through both page paths (rows rendered by the API, and the store's own JSON),
with publish times that disagree with ingest order (a producer backfilling the past)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from latam.domain import NewMessage, Position, encode_cursor
from latam.errors import InvalidRequest
from latam.service import Service
from tests.contract.conftest import read_json_pages

BASE = datetime(2026, 5, 1, tzinfo=UTC)
SEED = 20


def load(service: Service, rnd: random.Random) -> dict[str, dict[str, datetime]]:
    """Two topics with the same ids; publish times drawn from a few instants (many rows
    share one, as an HTTP batch does) and written in shuffled batches, so ingest order
    and publish-time order disagree."""
    instants = [
        BASE + timedelta(minutes=m, microseconds=rnd.choice([0, 0, 1, 999_999])) for m in range(8)
    ]
    written: dict[str, dict[str, datetime]] = {}
    for name in ("a", "b"):
        topic = service.create_topic(name=name)
        times = {f"m{i:03d}": rnd.choice(instants) for i in range(90)}
        ids = list(times)
        rnd.shuffle(ids)
        for start in range(0, len(ids), 13):
            batch = ids[start : start + 13]
            service.store.write_messages(
                [
                    (topic.id, NewMessage(name, mid, f'{{"t":"{name}"}}', published_at=times[mid]))
                    for mid in batch
                ]
            )
        written[name] = times
    return written


def walk(
    service: Service, topic_id: int, since: datetime | None, until: datetime | None, *, json: bool
) -> list[tuple[str, datetime]]:
    """Every page of a window, 7 rows at a time, through one of the two page paths."""
    seen: list[tuple[str, datetime]] = []
    cursor: str | None = None
    if json:
        pages = asyncio.run(read_json_pages(service, topic_id, limit=7, since=since, until=until))
        return [
            (row["id"], datetime.fromisoformat(row["published_at"]))
            for page in pages
            for row in page
        ]
    while True:
        page = service.read_messages(
            topic_id=topic_id, limit=7, cursor=cursor, since=since, until=until
        )
        seen.extend((m.message_id, m.published_at) for m in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return seen


WINDOWS = [
    (0, None),
    (None, 5),
    (2, 6),
    (3, 4),
    (7, None),
    (8, None),  # after every row: empty
]


@pytest.mark.parametrize(("since_minute", "until_minute"), WINDOWS)
def test_each_row_of_a_window_once_in_publish_time_order(
    service: Service, since_minute: int | None, until_minute: int | None
) -> None:
    written = load(service, random.Random(SEED))
    since = None if since_minute is None else BASE + timedelta(minutes=since_minute)
    until = None if until_minute is None else BASE + timedelta(minutes=until_minute)
    topic = service.store.topic_ids(["a"])["a"]
    expected = {
        mid
        for mid, at in written["a"].items()
        if (since is None or at >= since) and (until is None or at < until)
    }
    for json in (False, True):
        seen = walk(service, topic, since, until, json=json)
        ids = [mid for mid, _ in seen]
        assert len(ids) == len(set(ids)), "a row was returned twice"
        assert set(ids) == expected
        times = [at for _, at in seen]
        assert times == sorted(times)
        assert all(written["a"][mid] == at for mid, at in seen)


def test_rows_written_while_paging_are_never_repeated(service: Service) -> None:
    load(service, random.Random(SEED + 1))
    topic = service.store.topic_ids(["a"])["a"]
    since = BASE + timedelta(minutes=2)
    first = service.read_messages(topic_id=topic, limit=10, since=since)
    assert first.next_cursor is not None
    behind = first.items[-1].published_at - timedelta(microseconds=1)
    service.store.write_messages(
        [
            (topic, NewMessage("a", "late-behind", "{}", published_at=max(behind, since))),
            (topic, NewMessage("a", "late-ahead", "{}", published_at=BASE + timedelta(hours=1))),
        ]
    )
    ids = [m.message_id for m in first.items]
    cursor: str | None = first.next_cursor
    while cursor is not None:
        page = service.read_messages(topic_id=topic, limit=10, cursor=cursor, since=since)
        ids.extend(m.message_id for m in page.items)
        cursor = page.next_cursor
    assert len(ids) == len(set(ids))
    assert "late-ahead" in ids


def test_a_cursor_continues_only_its_kind_of_page(service: Service) -> None:
    load(service, random.Random(SEED))
    topic = service.store.topic_ids(["a"])["a"]
    since = BASE
    plain = service.read_messages(topic_id=topic, limit=5).next_cursor
    windowed = service.read_messages(topic_id=topic, limit=5, since=since).next_cursor
    assert plain is not None
    assert windowed is not None
    with pytest.raises(InvalidRequest, match="without since/until"):
        service.read_messages(topic_id=topic, limit=5, cursor=plain, since=since)
    with pytest.raises(InvalidRequest, match="with since/until"):
        service.read_messages(topic_id=topic, limit=5, cursor=windowed)
    foreign = Position(3, BASE).encode(topic + 1)
    with pytest.raises(InvalidRequest, match="does not belong"):
        service.read_messages(topic_id=topic, limit=5, cursor=foreign, since=since)
    assert service.read_messages(topic_id=topic, limit=5, cursor=encode_cursor(topic, 0)).items
