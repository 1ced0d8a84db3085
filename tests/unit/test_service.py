"""The service's use cases on the in-memory fakes: topics, publishing, reading, stats,
dead letters and readiness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from latam.domain import NewMessage, encode_cursor
from latam.errors import Conflict, InvalidMessage, InvalidRequest, NotFound, StoreUnavailable
from latam.service import MAX_BUCKETS, LetterFilter, PublishItem, Service
from tests.fakes import MemoryBroker, MemoryStore

BASE = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def service() -> Service:
    return Service(store=MemoryStore(), broker=MemoryBroker(), max_message_bytes=64)


def store_of(service: Service) -> MemoryStore:
    assert isinstance(service.store, MemoryStore)
    return service.store


def broker_of(service: Service) -> MemoryBroker:
    assert isinstance(service.broker, MemoryBroker)
    return service.broker


# -- topics -------------------------------------------------------------------------------
def test_topic_lifecycle(service: Service) -> None:
    topic = service.create_topic(name="  flights  ")
    assert topic.name == "flights"  # trimmed
    assert service.get_topic(topic_id=topic.id) == topic
    assert service.rename_topic(topic_id=topic.id, name="vuelos").name == "vuelos"
    service.delete_topic(topic_id=topic.id)
    with pytest.raises(NotFound):
        service.get_topic(topic_id=topic.id)
    with pytest.raises(NotFound):
        service.delete_topic(topic_id=topic.id)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "a\nb"])
def test_invalid_topic_names_are_refused(service: Service, name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        service.create_topic(name=name)
    assert caught.value.field == "name"
    topic = service.create_topic(name="ok")
    with pytest.raises(InvalidRequest):
        service.rename_topic(topic_id=topic.id, name=name)


def test_duplicate_names_conflict(service: Service) -> None:
    service.create_topic(name="a")
    other = service.create_topic(name="b")
    with pytest.raises(Conflict):
        service.create_topic(name="a")
    with pytest.raises(Conflict):
        service.rename_topic(topic_id=other.id, name="a")
    assert service.rename_topic(topic_id=other.id, name="b").name == "b"  # its own name


def test_list_topics_pages_with_cursors(service: Service) -> None:
    created = [service.create_topic(name=f"t{i}").id for i in range(5)]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = service.list_topics(limit=2, cursor=cursor)
        seen.extend(t.id for t in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == created
    assert pages == 3
    exact = service.list_topics(limit=5)
    assert len(exact.items) == 5
    assert exact.next_cursor is None  # no empty last page when the limit fits exactly
    with pytest.raises(InvalidRequest):
        service.list_topics(limit=2, cursor="garbage!")


# -- publishing ---------------------------------------------------------------------------
def test_publish_puts_validated_messages_on_the_broker(service: Service) -> None:
    topic = service.create_topic(name="orders")
    ids = service.publish(
        topic_id=topic.id,
        items=[PublishItem({"n": 1}, {"k": "v"}, id="given"), PublishItem({"n": 2}, {})],
    )
    assert ids[0] == "given"
    assert len(ids) == 2
    assert ids[1]  # generated
    deliveries = broker_of(service).pull(max_messages=10, timeout=1)
    assert [orjson.loads(d.body) for d in deliveries] == [{"n": 1}, {"n": 2}]
    assert [d.attributes["message_id"] for d in deliveries] == ids
    assert deliveries[0].attributes["topic"] == "orders"
    assert deliveries[0].attributes["k"] == "v"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (PublishItem({"n": 1}, {}, id="x" * 129), "invalid_id"),
        (PublishItem({"n": 1}, {}, id="tab\there"), "invalid_id"),
        (PublishItem({"n": 1}, {"topic": "other"}), "invalid_attributes"),
        (PublishItem({"n": 1}, {"k": "v" * 1025}), "invalid_attributes"),
        (PublishItem({"n": 1}, {f"k{i}": "v" for i in range(65)}), "invalid_attributes"),
        (PublishItem({"blob": "x" * 64}, {}), "too_large"),
    ],
)
def test_publish_refuses_the_whole_request_on_one_invalid_item(
    service: Service, item: PublishItem, reason: str
) -> None:
    topic = service.create_topic(name="orders")
    with pytest.raises(InvalidMessage) as caught:
        service.publish(topic_id=topic.id, items=[PublishItem({"ok": True}, {}), item])
    assert caught.value.reason == reason
    assert broker_of(service).backlog().messages == 0  # not even the valid one


def test_publish_to_a_missing_topic_is_not_found(service: Service) -> None:
    with pytest.raises(NotFound):
        service.publish(topic_id=42, items=[PublishItem({"n": 1}, {})])


def test_publish_goes_on_while_the_store_is_down_for_known_topics(service: Service) -> None:
    known = service.create_topic(name="known")
    never_read = service.create_topic(name="never-read")
    service.publish(topic_id=known.id, items=[PublishItem({"n": 1}, {})])
    store_of(service).down = True
    service.publish(topic_id=known.id, items=[PublishItem({"n": 2}, {})])
    with pytest.raises(StoreUnavailable):
        service.publish(topic_id=never_read.id, items=[PublishItem({"n": 3}, {})])
    assert broker_of(service).backlog().messages == 2


# -- reading ------------------------------------------------------------------------------
def write(service: Service, topic_id: int, name: str, count: int, hours: int = 0) -> None:
    store_of(service).write_messages(
        [
            (
                topic_id,
                NewMessage(
                    topic=name,
                    message_id=f"{hours}-{i}",
                    data=f'{{"i":{i}}}',
                    published_at=BASE + timedelta(hours=hours),
                ),
            )
            for i in range(count)
        ]
    )


def test_read_messages_pages_with_cursors(service: Service) -> None:
    topic = service.create_topic(name="a")
    write(service, topic.id, "a", 7)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = service.read_messages(topic_id=topic.id, limit=3, cursor=cursor)
        seen.extend(m.message_id for m in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"0-{i}" for i in range(7)]


def test_read_messages_cursor_stays_stable_while_messages_arrive(service: Service) -> None:
    topic = service.create_topic(name="a")
    write(service, topic.id, "a", 3)
    first = service.read_messages(topic_id=topic.id, limit=2)
    write(service, topic.id, "a", 2, hours=1)
    rest = service.read_messages(topic_id=topic.id, limit=10, cursor=first.next_cursor)
    assert [m.message_id for m in rest.items] == ["0-2", "1-0", "1-1"]


def test_tail_cursor_resumes_after_the_last_row_shown(service: Service) -> None:
    """A live tail: read to the end, come back later, see only what arrived since."""
    topic = service.create_topic(name="a")
    write(service, topic.id, "a", 3)
    page = service.read_messages(topic_id=topic.id, limit=10)
    assert page.next_cursor is None  # the last page
    assert page.tail_cursor is not None
    idle = service.read_messages(topic_id=topic.id, limit=10, cursor=page.tail_cursor)
    assert idle.items == []
    assert idle.tail_cursor == page.tail_cursor  # nothing new: resume from the same place
    write(service, topic.id, "a", 2, hours=1)
    newer = service.read_messages(topic_id=topic.id, limit=10, cursor=idle.tail_cursor)
    assert [m.message_id for m in newer.items] == ["1-0", "1-1"]


def test_read_messages_time_window(service: Service) -> None:
    topic = service.create_topic(name="a")
    for hour in range(3):
        write(service, topic.id, "a", 2, hours=hour)
    page = service.read_messages(
        topic_id=topic.id,
        limit=10,
        since=BASE + timedelta(hours=1),  # inclusive
        until=BASE + timedelta(hours=2),  # exclusive
    )
    assert [m.message_id for m in page.items] == ["1-0", "1-1"]
    with pytest.raises(InvalidRequest) as caught:
        service.read_messages(topic_id=topic.id, limit=10, since=BASE, until=BASE - timedelta(1))
    assert caught.value.field == "since"


def test_read_messages_rejects_foreign_cursors_and_missing_topics(service: Service) -> None:
    a, b = service.create_topic(name="a"), service.create_topic(name="b")
    with pytest.raises(InvalidRequest):
        service.read_messages(topic_id=a.id, limit=10, cursor=encode_cursor(b.id, 1))
    assert service.read_messages(topic_id=a.id, limit=10).items == []  # empty, exists
    with pytest.raises(NotFound):
        service.read_messages(topic_id=999, limit=10)


# -- stats --------------------------------------------------------------------------------
def test_topic_stats_counts_per_bucket(service: Service) -> None:
    topic = service.create_topic(name="a")
    write(service, topic.id, "a", 2, hours=0)
    write(service, topic.id, "a", 1, hours=25)
    days = service.topic_stats(topic_id=topic.id, bucket="day")
    assert [(b.start, b.count, b.bytes) for b in days] == [
        (BASE, 2, 14),
        (BASE + timedelta(days=1), 1, 7),
    ]


def test_topic_stats_refuses_bad_buckets_and_ranges(service: Service) -> None:
    topic = service.create_topic(name="a")
    with pytest.raises(InvalidRequest) as caught:
        service.topic_stats(topic_id=topic.id, bucket="week")
    assert caught.value.field == "bucket"
    with pytest.raises(InvalidRequest):
        service.topic_stats(topic_id=topic.id, bucket="hour", since=BASE, until=BASE - timedelta(1))
    too_wide = BASE + timedelta(minutes=MAX_BUCKETS + 1)
    with pytest.raises(InvalidRequest):
        service.topic_stats(topic_id=topic.id, bucket="minute", since=BASE, until=too_wide)
    fits = BASE + timedelta(minutes=MAX_BUCKETS)
    assert service.topic_stats(topic_id=topic.id, bucket="minute", since=BASE, until=fits) == []
    with pytest.raises(NotFound):
        service.topic_stats(topic_id=999, bucket="hour")


def test_open_ended_stats_with_too_many_buckets_are_refused(service: Service) -> None:
    topic = service.create_topic(name="a")
    store_of(service).write_messages(
        [
            (topic.id, NewMessage("a", str(i), "{}", published_at=BASE + timedelta(minutes=i)))
            for i in range(MAX_BUCKETS + 1)
        ]
    )
    assert len(service.topic_stats(topic_id=topic.id, bucket="hour")) == 167
    with pytest.raises(InvalidRequest) as caught:
        service.topic_stats(topic_id=topic.id, bucket="minute")
    assert "larger bucket" in caught.value.detail


# -- dead letters and health --------------------------------------------------------------
def test_dead_letters_pass_through_to_the_broker(service: Service) -> None:
    topic = service.create_topic(name="a")
    service.publish(
        topic_id=topic.id, items=[PublishItem({"n": i}, {}, id=f"m-{i}") for i in range(3)]
    )
    broker = broker_of(service)
    broker.dead_letter(broker.pull(max_messages=10, timeout=1), reason="unknown_topic")
    first = service.list_dead_letters(limit=2).items
    rest = service.list_dead_letters(limit=2, cursor=first[-1].id).items
    assert [d.message_id for d in first + rest] == ["m-0", "m-1", "m-2"]
    assert service.get_dead_letter(dead_letter_id=first[0].id).reason == "unknown_topic"
    with pytest.raises(NotFound):
        service.get_dead_letter(dead_letter_id="999")
    assert service.replay_dead_letters(ids=[first[0].id, "999"]) == 1
    assert broker.backlog().messages == 1
    assert service.purge_dead_letters() == 2
    assert service.list_dead_letters(limit=10).items == []


def test_dead_letter_filters_walk_a_bounded_number(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = [service.create_topic(name=n).id for n in ("a", "b")]
    for n in range(12):
        items = [PublishItem({"n": n}, {}, id=f"m-{n}")]
        service.publish(topic_id=topics[n % 2], items=items)
    broker = broker_of(service)
    pulled = broker.pull(max_messages=20, timeout=1)
    broker.dead_letter(pulled[:6], reason="max_attempts: store_unavailable")
    broker.dead_letter(pulled[6:], reason="unknown_topic")
    monkeypatch.setattr("latam.service.LETTER_SCAN", 4)
    where = LetterFilter(topic="b", reason="max_attempts")
    seen: list[str] = []
    cursor = None
    for _ in range(10):  # walks 4 letters per request: 3 requests, then the end
        page = service.list_dead_letters(limit=100, cursor=cursor, where=where)
        seen += [d.message_id for d in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == ["m-1", "m-3", "m-5"]
    summary = service.dead_letter_summary()
    assert (summary.total, summary.complete) == (12, True)
    assert summary.by_reason == {"max_attempts": 6, "unknown_topic": 6}
    assert summary.by_topic == {"a": 6, "b": 6}
    assert service.dead_letter_summary(where=LetterFilter(topic="a")).total == 6


def test_readiness_names_what_is_down(service: Service) -> None:
    service.readiness_ttl = 0
    assert service.readiness() == {"store": None, "broker": None}
    store_of(service).down = True
    broker_of(service).unavailable = True
    problems = service.readiness()
    assert problems["store"] == "the memory store is down"
    assert problems["broker"] == "the memory broker is unavailable"


def test_readiness_is_checked_once_per_interval(service: Service) -> None:
    store = store_of(service)
    before = store.pings
    for _ in range(50):
        assert service.readiness() == {"store": None, "broker": None}
    assert store.pings == before + 1
    store.down = True
    assert service.readiness()["store"] is None  # the answer of the last second
    service.readiness_ttl = 0
    assert service.readiness()["store"] == "the memory store is down"
