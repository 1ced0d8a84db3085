"""The worker's decisions, in process on the in-memory fakes: store and ack, dead-letter
poison with its reason, skip duplicates, wait out a store outage, stop with nothing lost."""

from __future__ import annotations

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
from latam.errors import InvalidMessage
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


def test_store_outage_nacks_waits_for_the_store_and_loses_nothing(broker: MemoryBroker) -> None:
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
    assert counter("messages_nacked", reason="store_unavailable") >= nacked + 4  # a batch
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
