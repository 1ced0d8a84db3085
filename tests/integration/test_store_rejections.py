"""The database refusing one message's data costs that message only: the worker splits
the batch until the refused message is alone, dead-letters it with the database's own
words, stores the rest, and the worker stays up. Real databases refuse through a
trigger, as a CHECK or a column type would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from latam.broker.base import DeliveryPolicy
from latam.broker.sqlite import SqliteBroker
from latam.domain import NewMessage, OutboundMessage
from latam.errors import StoreRejected, StoreUnavailable
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from latam.worker import Worker
from tests.databases import temporary_database

TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages"
        " WHEN NEW.message_id LIKE 'poison%'"
        " BEGIN SELECT RAISE(ABORT, 'poison is refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN"
        " IF NEW.message_id LIKE 'poison%' THEN"
        " RAISE EXCEPTION 'poison is refused' USING ERRCODE = '22000'; END IF;"
        " RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages"
        " FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
}


@pytest.fixture(params=sorted(TRIGGERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    with temporary_database(request.param, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        with engine.begin() as conn:
            for statement in TRIGGERS[request.param]:
                conn.execute(text(statement))
        made = SqlStore(engine)
        yield made
        made.close()


def outbound(topic: str, message_id: str) -> OutboundMessage:
    return OutboundMessage(
        topic=topic,
        message_id=message_id,
        body=orjson.dumps({"id": message_id}),
        attributes={},
        published_at=datetime.now(UTC),
    )


def test_only_the_refused_messages_are_dead_lettered(store: SqlStore, tmp_path: Path) -> None:
    topic = store.create_topic("flights")
    broker = SqliteBroker(tmp_path / "broker.db", DeliveryPolicy())
    ids = [f"ok-{i}" for i in range(40)]
    ids[7], ids[31] = "poison-a", "poison-b"
    broker.publish([outbound("flights", i) for i in ids])
    worker = Worker(store=store, broker=broker, batch_size=100)
    consumer = threading.Thread(target=worker.run)
    consumer.start()
    deadline = time.monotonic() + 20
    while broker.dead_letter_count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop.set()
    consumer.join(20)
    stored = store.list_messages(topic.id, limit=100)
    assert sorted(m.message_id for m in stored) == sorted(i for i in ids if i.startswith("ok"))
    letters = broker.list_dead_letters(limit=10)
    assert sorted(d.message_id for d in letters) == ["poison-a", "poison-b"]
    for letter in letters:
        assert letter.reason.startswith("store_rejected: ")
        assert "poison is refused" in letter.reason
    assert broker.backlog().messages == 0  # every good message acked, none nacked
    broker.close()


def test_errors_are_classified_by_what_retrying_can_do(store: SqlStore) -> None:
    store.create_topic("t")
    with pytest.raises(StoreRejected):
        store.write_messages([(1, NewMessage(topic="t", message_id="poison-1", data="{}"))])
    if store.engine.dialect.name == "postgresql":
        # PostgreSQL refuses a NUL even in a lookup: data, not an outage.
        with pytest.raises(StoreRejected):
            store.topic_ids(["bad\x00name"])
    unreachable = SqlStore(build_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", Settings()))
    with pytest.raises(StoreUnavailable, match="OperationalError"):
        unreachable.ping()
