"""The worker's decisions, in process on the in-memory fakes: store and ack, dead-letter
poison with its reason, skip duplicates, wait out a store outage, stop with nothing lost."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from latam import worker as worker_module
from latam.broker.base import DeliveryPolicy
from latam.domain import NewMessage, OutboundMessage, decode_envelope
from latam.errors import InvalidMessage, StoreRejected, StoreUnavailable
from latam.storage.port import WriteResult
from latam.worker import Worker
from tests.fakes import MemoryBroker, MemoryStore
from tests.support import unique

POLICY = DeliveryPolicy(
    max_delivery_attempts=5,
    ack_deadline_seconds=10,
    backoff_min_seconds=0.01,
    backoff_max_seconds=0.05,
)
PUBLISHED = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _short_idle_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    # An idle pull blocks this long before the loop sees ``stop``; keep stopping fast.
    monkeypatch.setattr(worker_module, "IDLE_PULL_SECONDS", 0.02)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached within the deadline")
        time.sleep(0.005)


@contextmanager
def running(worker: Worker) -> Iterator[threading.Thread]:
    """``worker.run()`` in a thread; stopped, joined and checked for errors on exit."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker")
    thread.start()
    try:
        yield thread
    finally:
        worker.stop.set()
        thread.join(5)
    assert not thread.is_alive(), "run() did not return after stop"
    assert not errors, errors


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"latam_{name}_total", labels) or 0.0


def outbound(topic: str, message_id: str, **data: object) -> OutboundMessage:
    return OutboundMessage(
        topic=topic,
        message_id=message_id,
        body=orjson.dumps(data or {"id": message_id}),
        attributes={"source": "test"},
        published_at=PUBLISHED,
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(POLICY)


def make_worker(store: MemoryStore, broker: MemoryBroker, **options: Any) -> Worker:
    options.setdefault("policy", POLICY)
    return Worker(store=store, broker=broker, batch_size=4, max_wait_seconds=0.01, **options)


def drained(broker: MemoryBroker) -> bool:
    return broker.backlog().messages == 0


def test_good_messages_are_stored_and_acked(store: MemoryStore, broker: MemoryBroker) -> None:
    topic = store.create_topic(unique("orders-"))
    broker.publish([outbound(topic.name, f"m-{i}", n=i) for i in range(10)])
    with running(make_worker(store, broker)):
        wait_until(lambda: store.count_messages(topic.id) == 10 and drained(broker))
    stored = store.list_messages(topic.id, limit=100)
    assert sorted(m.message_id for m in stored) == [f"m-{i}" for i in range(10)]
    assert {orjson.loads(m.data)["n"] for m in stored} == set(range(10))
    assert all(m.attributes == '{"source":"test"}' for m in stored)
    assert all(m.published_at == PUBLISHED for m in stored)
    assert broker.dead_letter_count() == 0


POISON = {
    # case: (body, attributes); each carries a "case" attribute to find its dead letter
    "not JSON": (b"not json", {"topic": "known"}),
    "not an object": (b"[1, 2]", {"topic": "known"}),
    "no topic attribute": (b"{}", {}),
    "too large": (orjson.dumps({"blob": "x" * 200}), {"topic": "known"}),
    "bad published_at": (b"{}", {"topic": "known", "published_at": "yesterday"}),
    "bad message id": (b"{}", {"topic": "known", "message_id": "x" * 129}),
}
MAX_BYTES = 100


def decoder_reason(body: bytes, attributes: dict[str, str]) -> str:
    """The reason the envelope decoder gives (its choices are tested in test_domain)."""
    with pytest.raises(InvalidMessage) as caught:
        decode_envelope(
            body, attributes, fallback_id="x", fallback_published_at=PUBLISHED, max_bytes=MAX_BYTES
        )
    return caught.value.reason


def test_malformed_messages_are_dead_lettered_with_their_reason(
    store: MemoryStore, broker: MemoryBroker
) -> None:
    topic = store.create_topic("known")
    expected = {case: decoder_reason(*poison) for case, poison in POISON.items()}
    expected["unknown topic"] = "unknown_topic"  # the worker's own verdict, after a lookup
    assert expected["no topic attribute"] == "missing_topic"
    assert expected["too large"] == "too_large"
    before = {r: counter("messages_dead_lettered", reason=r) for r in set(expected.values())}
    for case, (body, attributes) in POISON.items():
        broker.queue.put(body, {**attributes, "case": case})
    broker.queue.put(b"{}", {"topic": "nobody-made-this", "case": "unknown topic"})
    broker.publish([outbound("known", "fine")])
    with running(make_worker(store, broker, max_message_bytes=MAX_BYTES)):
        wait_until(lambda: broker.dead_letter_count() == len(expected) and drained(broker))
    letters = broker.list_dead_letters(limit=100)
    assert {letter.attributes["case"]: letter.reason for letter in letters} == expected
    assert all(letter.delivery_attempts == 1 for letter in letters)  # at once, no retries
    for reason in set(expected.values()):
        count = sum(1 for r in expected.values() if r == reason)
        assert counter("messages_dead_lettered", reason=reason) == before[reason] + count
    # The poison shared batches with a good message, which still got through.
    assert [m.message_id for m in store.list_messages(topic.id, limit=10)] == ["fine"]


def test_duplicates_are_acked_not_stored_twice(store: MemoryStore, broker: MemoryBroker) -> None:
    topic = store.create_topic(unique("dups-"))
    earlier = NewMessage(topic=topic.name, message_id="old", data='{"v":1}')
    store.write_messages([(topic.id, earlier)])
    before = counter("messages_duplicates", topic=topic.name)
    broker.publish(
        [
            outbound(topic.name, "new", v=2),
            outbound(topic.name, "new", v=3),  # a re-publish of the same id
            outbound(topic.name, "old", v=4),  # stored before this worker ran
        ]
    )
    with running(make_worker(store, broker)):
        wait_until(lambda: drained(broker))
    stored = {m.message_id: m.data for m in store.list_messages(topic.id, limit=10)}
    assert stored == {"old": '{"v":1}', "new": '{"v":2}'}  # first copy wins, none replaced
    assert counter("messages_duplicates", topic=topic.name) == before + 2
    assert broker.dead_letter_count() == 0


class RecoveringStore(MemoryStore):
    """Once down, up again at its second ping; notes the calls it had seen at each ping."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_at_ping: list[int] = []

    def ping(self) -> None:
        self.calls_at_ping.append(self.calls)
        if len(self.calls_at_ping) == 2:
            self.down = False
        super().ping()


def test_a_store_outage_costs_no_attempt_and_loses_nothing(broker: MemoryBroker) -> None:
    store = RecoveringStore()
    topic = store.create_topic(unique("outage-"))
    store.down = True
    nacked = counter("messages_nacked", reason="store_unavailable")
    broker.publish([outbound(topic.name, f"m-{i}") for i in range(10)])
    with running(make_worker(store, broker)):
        wait_until(lambda: store.count_messages(topic.id) == 10 and drained(broker))
    first, second = store.calls_at_ping[:2]
    assert first >= 2  # create_topic and the failed write
    # Between the two pings the worker neither pulled nor wrote: pulling during an
    # outage would only spend delivery attempts and dead-letter good messages.
    assert second == first
    # The batch in hand was written again once the store answered: no attempt spent.
    assert counter("messages_nacked", reason="store_unavailable") == nacked
    assert all(d.delivery_attempt == 1 for d in broker.list_dead_letters(limit=10))
    assert broker.dead_letter_count() == 0
    ids = [m.message_id for m in store.list_messages(topic.id, limit=100)]
    assert sorted(ids) == sorted(f"m-{i}" for i in range(10))


class GatedStore(MemoryStore):
    """A store whose writes wait for ``release``: a batch caught mid-write."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_messages(self, batch: Sequence[tuple[int, NewMessage]]) -> WriteResult:
        self.entered.set()
        assert self.release.wait(5)
        return super().write_messages(batch)


def test_stop_ends_run_with_the_batch_in_hand_settled(broker: MemoryBroker) -> None:
    store = GatedStore()
    topic = store.create_topic(unique("stop-"))
    broker.publish([outbound(topic.name, f"m-{i}") for i in range(3)])
    worker = make_worker(store, broker)
    with running(worker) as thread:
        assert store.entered.wait(5)
        worker.stop.set()
        time.sleep(0.05)  # give run() the chance to return early (it must not)
        assert thread.is_alive()
        store.release.set()
        thread.join(5)
        assert not thread.is_alive()
    assert store.count_messages(topic.id) == 3
    assert drained(broker)  # stored and acked, not left to a lease expiry


def test_a_broker_outage_pauses_pulling_then_consumption_resumes(
    store: MemoryStore, broker: MemoryBroker
) -> None:
    topic = store.create_topic(unique("broker-"))
    broker.publish([outbound(topic.name, "m-1")])
    broker.unavailable = True
    with running(make_worker(store, broker)):
        time.sleep(0.1)  # a window for the worker to hit the outage, not an assertion
        assert store.calls == 1  # create_topic; no write while the broker is away
        broker.unavailable = False
        wait_until(lambda: store.count_messages(topic.id) == 1 and drained(broker))


class FailingStore(MemoryStore):
    """Answers pings, but fails every write holding ``m-1`` as a transient error."""

    def write_messages(self, batch: Sequence[tuple[int, NewMessage]]) -> WriteResult:
        if any(m.message_id == "m-1" for _, m in batch):
            raise StoreUnavailable("the store is unavailable: deadlock detected")
        return super().write_messages(batch)


def test_attempts_are_counted_and_spent_once_in_the_worker() -> None:
    """A message the store fails every time (while it answers pings) is tried alone,
    max_delivery_attempts times, then set aside; its batch-mates are stored."""
    policy = DeliveryPolicy(max_delivery_attempts=3, backoff_min_seconds=0.01)
    broker, store = MemoryBroker(policy), FailingStore()
    topic = store.create_topic(unique("retry-"))
    broker.publish([outbound(topic.name, i) for i in ("ok-1", "m-1", "ok-2", "ok-3")])
    before = counter("messages_dead_lettered", reason="max_delivery_attempts")
    with running(make_worker(store, broker, policy=policy)):
        wait_until(lambda: broker.dead_letter_count() == 1)
    [letter] = broker.list_dead_letters(limit=10)
    assert letter.reason == "max_delivery_attempts: store_unavailable"
    assert letter.delivery_attempts == 3  # tried exactly max_delivery_attempts times
    after = counter("messages_dead_lettered", reason="max_delivery_attempts")
    assert after == before + 1  # counted once
    stored = sorted(m.message_id for m in store.list_messages(topic.id, limit=10))
    assert stored == ["ok-1", "ok-2", "ok-3"]


def test_a_message_whose_consumer_keeps_dying_is_set_aside(store: MemoryStore) -> None:
    policy = DeliveryPolicy(max_delivery_attempts=2, ack_deadline_seconds=0.05)
    broker = MemoryBroker(policy)
    topic = store.create_topic(unique("crash-"))
    broker.publish([outbound(topic.name, "m-1")])
    for attempt in (1, 2):  # two consumers that died holding it
        assert [d.delivery_attempt for d in broker.pull(max_messages=1, timeout=1)] == [attempt]
        time.sleep(0.06)
    with running(make_worker(store, broker, policy=policy)):
        wait_until(lambda: broker.dead_letter_count() == 1)
    [letter] = broker.list_dead_letters(limit=10)
    assert letter.reason == "max_delivery_attempts: ack deadline expired"
    assert store.count_messages(topic.id) == 0


def test_a_dead_letter_keeps_the_id_its_message_was_stored_under(
    store: MemoryStore, broker: MemoryBroker
) -> None:
    """A message without an id is stored under the broker's id; its dead letter carries
    that id, so a replay cannot store it a second time under a new one."""
    name = unique("late-")
    broker.queue.put(b'{"k": 1}', {"topic": name})  # a foreign producer: no message_id
    with running(make_worker(store, broker)):
        wait_until(lambda: broker.dead_letter_count() == 1)  # its topic does not exist yet
        [letter] = broker.list_dead_letters(limit=10)
        assert letter.reason == "unknown_topic"
        assert letter.message_id.startswith("memory-")
        topic = store.create_topic(name)
        assert broker.replay_dead_letters([letter.id]) == 1
        wait_until(lambda: store.count_messages(topic.id) == 1 and drained(broker))
    [stored] = store.list_messages(topic.id, limit=10)
    assert stored.message_id == letter.message_id


class RefusingStore(MemoryStore):
    """A database that refuses some data itself (as PostgreSQL refuses a NUL)."""

    def write_messages(self, batch: Sequence[tuple[int, NewMessage]]) -> WriteResult:
        if any(m.message_id.startswith("poison") for _, m in batch):
            raise StoreRejected("the store rejected the data: DataError: NUL")
        return super().write_messages(batch)


def test_only_the_messages_the_store_refuses_are_set_aside(broker: MemoryBroker) -> None:
    store = RefusingStore()
    topic = store.create_topic(unique("refused-"))
    ids = ["a", "poison-1", "b", "c"]
    broker.publish([outbound(topic.name, i) for i in ids])
    with running(make_worker(store, broker)):
        wait_until(lambda: broker.dead_letter_count() == 1 and drained(broker))
    assert sorted(m.message_id for m in store.list_messages(topic.id, limit=10)) == ["a", "b", "c"]
    [letter] = broker.list_dead_letters(limit=10)
    assert letter.message_id == "poison-1"
    assert letter.reason == "store_rejected: the store rejected the data: DataError: NUL"


def test_a_renamed_topic_keeps_its_messages(store: MemoryStore, broker: MemoryBroker) -> None:
    """latam's producers name the topic by id: a rename, and a new topic under the old
    name, cannot reroute a backlog."""
    old = store.create_topic("flights")
    broker.publish([dataclasses.replace(outbound("flights", "m-1"), topic_id=old.id)])
    store.rename_topic(old.id, "flights-2025")
    other = store.create_topic("flights")
    with running(make_worker(store, broker)):
        wait_until(lambda: drained(broker))
    assert [m.message_id for m in store.list_messages(old.id, limit=10)] == ["m-1"]
    assert store.count_messages(other.id) == 0
