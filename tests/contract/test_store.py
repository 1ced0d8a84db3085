"""The store contract: every adapter (SQLite, PostgreSQL, MySQL/MariaDB) passes it unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from latam.domain import NewMessage
from latam.errors import Conflict, NotFound, StoreUnavailable
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from tests.databases import STORES
from tests.fakes import MemoryStore

# The SQL adapters and the in-memory fake of tests/fakes.py (the ``store`` fixture of
# conftest.py), so the fake cannot drift.
AnyStore = SqlStore | MemoryStore


def msg(topic: str, message_id: str, data: str = '{"k":1}', **kw: object) -> NewMessage:
    return NewMessage(topic=topic, message_id=message_id, data=data, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("store", STORES, indirect=True)  # only SQL stores have a schema
def test_migrate_is_idempotent(store: SqlStore) -> None:
    assert migrate.upgrade(store.engine) == migrate.head()
    assert migrate.current(store.engine) == migrate.head()


def test_topic_lifecycle(store: AnyStore) -> None:
    topic = store.create_topic("flights")
    assert store.get_topic(topic.id).name == "flights"
    renamed = store.rename_topic(topic.id, "vuelos")
    assert renamed.name == "vuelos"
    assert renamed.updated_at >= topic.updated_at
    assert store.topic_ids(["vuelos", "nope"]) == {"vuelos": topic.id}
    store.delete_topic(topic.id)
    with pytest.raises(NotFound):
        store.get_topic(topic.id)
    with pytest.raises(NotFound):
        store.delete_topic(topic.id)
    with pytest.raises(NotFound):
        store.rename_topic(topic.id, "x")


def test_duplicate_names_conflict_and_names_are_case_sensitive(store: AnyStore) -> None:
    first = store.create_topic("Flights")
    store.create_topic("flights")
    with pytest.raises(Conflict):
        store.create_topic("Flights")
    other = store.create_topic("other")
    with pytest.raises(Conflict):
        store.rename_topic(other.id, "Flights")
    assert store.get_topic(first.id).name == "Flights"


def test_list_topics_pages_by_id(store: AnyStore) -> None:
    ids = [store.create_topic(f"t{i}").id for i in range(5)]
    first = store.list_topics(limit=3)
    rest = store.list_topics(limit=3, after_id=first[-1].id)
    assert [t.id for t in first + rest] == ids


def test_write_is_idempotent_and_counts_duplicates(store: AnyStore) -> None:
    topic = store.create_topic("a")
    batch = [(topic.id, msg("a", str(i))) for i in range(10)]
    result = store.write_messages([*batch, (topic.id, msg("a", "3"))])
    assert result.stored == {"a": 10}
    assert result.duplicates == {"a": 1}
    assert len(result.stored_published_at) == 10
    again = store.write_messages([*batch[:5], (topic.id, msg("a", "new"))])
    assert again.stored == {"a": 1}
    assert again.duplicates == {"a": 5}
    assert store.count_messages(topic.id) == 11


def test_same_id_in_two_topics_is_two_messages(store: AnyStore) -> None:
    a, b = store.create_topic("a"), store.create_topic("b")
    result = store.write_messages([(a.id, msg("a", "x")), (b.id, msg("b", "x"))])
    assert result.stored == {"a": 1, "b": 1}


def test_ids_are_case_sensitive(store: AnyStore) -> None:
    topic = store.create_topic("a")
    result = store.write_messages([(topic.id, msg("a", "ID")), (topic.id, msg("a", "id"))])
    assert result.stored == {"a": 2}


def test_content_round_trips_exactly(store: AnyStore) -> None:
    topic = store.create_topic("a")
    big = '{"blob":"' + "x" * 200_000 + '"}'
    unicode = '{"ciudad":"São Paulo","emoji":"✈️","nested":{"a":[1,2.5,null,true]}}'
    published = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    store.write_messages(
        [
            (topic.id, msg("a", "big", big, published_at=published)),
            (topic.id, msg("a", "uni", unicode, attributes={"k": "v"}, published_at=published)),
        ]
    )
    stored = store.list_messages(topic.id, limit=10)
    assert [m.data for m in stored] == [big, unicode]
    assert stored[1].attributes == '{"k":"v"}'
    assert stored[0].published_at == published
    assert stored[0].ingested_at.tzinfo is not None


def test_schema_version_round_trips(store: AnyStore) -> None:
    """The schema version a message was validated against, or None, comes back on every
    read of it."""
    topic = store.create_topic("a")
    store.write_messages(
        [(topic.id, msg("a", "checked", schema_version=3)), (topic.id, msg("a", "free"))]
    )
    listed = store.list_messages(topic.id, limit=10)
    paged, more = store.page_messages(topic.id, limit=10, max_bytes=1 << 20)
    in_time = store.list_messages(topic.id, limit=10, since=datetime(1970, 1, 1, tzinfo=UTC))
    for page in (listed, paged, in_time):
        assert [(m.message_id, m.schema_version) for m in page] == [
            ("checked", 3),
            ("free", None),
        ]
    assert not more


def test_paging_in_ingest_order_and_time_filters(store: AnyStore) -> None:
    topic = store.create_topic("a")
    base = datetime(2026, 5, 1, tzinfo=UTC)
    for chunk in range(3):
        store.write_messages(
            [
                (topic.id, msg("a", f"{chunk}-{i}", published_at=base + timedelta(hours=chunk)))
                for i in range(4)
            ]
        )
    seen: list[str] = []
    after = 0
    while page := store.list_messages(topic.id, limit=5, after_seq=after):
        seen.extend(m.message_id for m in page)
        after = page[-1].seq
    assert seen == [f"{c}-{i}" for c in range(3) for i in range(4)]
    window = store.list_messages(
        topic.id, limit=100, since=base + timedelta(hours=1), until=base + timedelta(hours=2)
    )
    assert {m.message_id for m in window} == {f"1-{i}" for i in range(4)}


def test_delete_topic_removes_its_messages(store: AnyStore) -> None:
    topic = store.create_topic("a")
    store.write_messages([(topic.id, msg("a", "1"))])
    store.delete_topic(topic.id)
    again = store.create_topic("a")
    assert store.list_messages(again.id, limit=10) == []


def test_unreachable_store_raises_store_unavailable(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    unreachable = SqlStore(build_engine(url, Settings(data_dir=tmp_path)))
    with pytest.raises(StoreUnavailable):
        unreachable.ping()
    with pytest.raises(StoreUnavailable):
        unreachable.list_topics(limit=1)


def test_ids_compare_exactly(store: AnyStore) -> None:
    """Ids differing only by trailing spaces or case are different messages everywhere
    (MySQL's PAD SPACE collations would take one for a duplicate of the other)."""
    topic = store.create_topic("exact-ids")
    ids = ["LA800", "LA800 ", "LA800  ", "la800"]
    result = store.write_messages([(topic.id, msg(topic.name, i)) for i in ids])
    assert sum(result.stored.values()) == 4
    again = store.write_messages([(topic.id, msg(topic.name, i)) for i in ids])
    assert sum(again.stored.values()) == 0
    stored = store.list_messages(topic.id, limit=10)
    assert sorted(m.message_id for m in stored) == sorted(ids)
