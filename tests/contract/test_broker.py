"""The broker contract: at-least-once, leases, backoff, dead letters, flow control.

Written once; every adapter's harness in ``brokers.py`` runs it unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from latam.broker.base import REASON_MAX_ATTEMPTS, Broker, Delivery, DeliveryPolicy
from latam.domain import OutboundMessage
from tests.contract.brokers import HARNESSES, Harness


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with HARNESSES[request.param](tmp_path) as made:
        yield made


def policy(harness: Harness, **overrides: float) -> DeliveryPolicy:
    values = {
        "max_delivery_attempts": 3,
        "ack_deadline_seconds": harness.min_ack_deadline,
        "backoff_min_seconds": 0.2,
        "backoff_max_seconds": 0.4,
        "max_in_flight": 100,
    }
    values.update(overrides)
    return DeliveryPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture
def broker(harness: Harness) -> Iterator[Broker]:
    made = harness.make(policy(harness))
    yield made
    made.close()


def outbound(i: int, topic: str = "orders") -> OutboundMessage:
    return OutboundMessage(
        topic=topic,
        message_id=f"m-{i}",
        body=orjson.dumps({"n": i}),
        attributes={"source": "test"},
        published_at=datetime.now(UTC),
    )


def pull_all(broker: Broker, expected: int, timeout: float = 15) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(broker.pull(max_messages=expected - len(got), timeout=0.5))
    return got


def test_publish_then_pull_delivers_body_and_attributes(broker: Broker) -> None:
    broker.publish([outbound(i) for i in range(3)])
    got = pull_all(broker, 3)
    assert sorted(orjson.loads(d.body)["n"] for d in got) == [0, 1, 2]
    first = got[0]
    assert first.attributes["topic"] == "orders"
    assert first.attributes["source"] == "test"
    assert first.attributes["message_id"].startswith("m-")
    assert first.delivery_attempt == 1
    assert first.broker_message_id
    broker.ack(got)


def test_acked_messages_are_not_redelivered(harness: Harness, broker: Broker) -> None:
    broker.publish([outbound(1)])
    broker.ack(pull_all(broker, 1))
    time.sleep(harness.min_ack_deadline + 0.5)
    assert broker.pull(max_messages=10, timeout=1.0) == []


def test_unacked_message_comes_back_after_the_ack_deadline(harness: Harness) -> None:
    first = harness.make(policy(harness))
    first.publish([outbound(7)])
    leased = pull_all(first, 1)
    assert len(leased) == 1
    assert first.pull(max_messages=10, timeout=0.1) == []  # leased: invisible
    again = pull_all(first, 1, timeout=harness.min_ack_deadline + 15)
    assert len(again) == 1
    assert orjson.loads(again[0].body) == {"n": 7}
    assert again[0].delivery_attempt == 2
    first.ack(again)
    first.close()


def test_nack_redelivers_after_the_delay_and_counts_attempts(
    harness: Harness, broker: Broker
) -> None:
    broker.publish([outbound(1)])
    first = pull_all(broker, 1)
    broker.nack(first, reason="store_unavailable", delay=1.0)
    if harness.name not in {"pubsub", "pubsub-unary"}:
        # Pub/Sub spaces redeliveries by its subscription's retry policy instead (and
        # the emulator redelivers at once).
        assert broker.pull(max_messages=1, timeout=0.3) == []
    second = pull_all(broker, 1)
    assert second[0].delivery_attempt == 2
    broker.ack(second)


def test_adapters_leave_the_attempt_limit_to_the_worker(broker: Broker) -> None:
    """Past the policy's attempts a message still comes back, counted: setting it aside
    is the worker's decision (tests/unit/test_worker.py), made in one place."""
    broker.publish([outbound(1)])
    for attempt in range(1, 5):
        got = pull_all(broker, 1)
        assert [d.delivery_attempt for d in got] == [attempt]
        broker.nack(got, reason="store_unavailable", delay=0.0)
    assert pull_all(broker, 1)[0].delivery_attempt == 5
    assert broker.list_dead_letters(limit=10) == []


def test_dead_letter_keeps_the_reason_and_the_attempts(broker: Broker) -> None:
    broker.publish([outbound(1)])
    broker.nack(pull_all(broker, 1), reason="store_unavailable", delay=0.0)
    got = pull_all(broker, 1)
    broker.dead_letter(got, reason=f"{REASON_MAX_ATTEMPTS}: store_unavailable")
    assert broker.pull(max_messages=10, timeout=1.0) == []
    letters = broker.list_dead_letters(limit=10)
    assert len(letters) == 1
    assert letters[0].reason == f"{REASON_MAX_ATTEMPTS}: store_unavailable"
    assert letters[0].message_id == "m-1"
    assert letters[0].delivery_attempts == 2


def test_dead_letter_replay_and_purge(broker: Broker) -> None:
    broker.publish([outbound(1), outbound(2)])
    got = pull_all(broker, 2)
    broker.dead_letter(got, reason="unknown_topic")
    letters = broker.list_dead_letters(limit=10)
    assert {d.reason for d in letters} == {"unknown_topic"}
    assert {orjson.loads(d.body)["n"] for d in letters} == {1, 2}
    one = broker.get_dead_letter(letters[0].id)
    assert one.topic == "orders"
    assert broker.dead_letter_count() in (2, None)
    assert broker.replay_dead_letters([letters[0].id]) == 1
    replayed = pull_all(broker, 1)
    assert orjson.loads(replayed[0].body) == orjson.loads(letters[0].body)
    broker.ack(replayed)
    assert broker.purge_dead_letters() == 1
    assert broker.list_dead_letters(limit=10) == []


def test_dead_letter_pages_stop_at_their_byte_budget(broker: Broker) -> None:
    """A page of dead letters stops after the letter that reaches ``max_bytes`` (at
    least one), and paging on from its last id still sees every letter once."""
    big = [replace(outbound(i), body=orjson.dumps({"n": i, "pad": "x" * 3000})) for i in range(5)]
    broker.publish(big)
    broker.dead_letter(pull_all(broker, 5), reason="unknown_topic")
    pages: list[list[int]] = []
    after = None
    while page := broker.list_dead_letters(limit=10, after=after, max_bytes=5000):
        pages.append(sorted(orjson.loads(d.body)["n"] for d in page))
        after = page[-1].id
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(n for p in pages for n in p) == [0, 1, 2, 3, 4]
    one = broker.list_dead_letters(limit=10, max_bytes=1)
    assert len(one) == 1


def test_flow_control_bounds_messages_in_flight(harness: Harness) -> None:
    bounded = harness.make(policy(harness, max_in_flight=5, ack_deadline_seconds=30))
    bounded.publish([outbound(i) for i in range(12)])
    held = pull_all(bounded, 5)
    assert len(held) == 5
    assert bounded.pull(max_messages=10, timeout=1.0) == []
    bounded.ack(held)
    more = pull_all(bounded, 5)
    assert len(more) == 5
    bounded.ack(more)
    bounded.close()


def test_messages_survive_a_new_client(harness: Harness) -> None:
    producer = harness.make(policy(harness))
    producer.publish([outbound(i) for i in range(4)])
    producer.close()
    consumer = harness.make(policy(harness))
    got = pull_all(consumer, 4)
    assert len(got) == 4
    consumer.ack(got)
    consumer.close()


def test_the_same_id_in_two_topics_is_two_messages(broker: Broker) -> None:
    """Identity is (topic, message id) on every broker, as in the store's unique key."""
    broker.publish([outbound(1, topic="arrivals"), outbound(1, topic="departures")])
    got = pull_all(broker, 2)
    assert sorted(d.attributes["topic"] for d in got) == ["arrivals", "departures"]
    assert {d.attributes["message_id"] for d in got} == {"m-1"}
    broker.ack(got)


def test_a_plain_producer_can_feed_the_broker(harness: Harness, broker: Broker) -> None:
    harness.publish_raw(b'{"plain": true}', {"topic": "orders"})
    got = pull_all(broker, 1)
    assert orjson.loads(got[0].body) == {"plain": True}
    assert got[0].attributes["topic"] == "orders"
    assert "message_id" not in got[0].attributes
    broker.ack(got)


# Attributes a NATS header cannot hold as it is: names that are not tokens, JetStream's
# prefix, values with edge whitespace, line breaks, tabs or non-ASCII text.
AWKWARD = {
    "two words": "x",
    "Nats-Expected-Stream": "not a JetStream header",
    "Latam-Attributes": "{}",
    "padded": "  both ends  ",
    "lines": "one\r\ntwo\nthree",
    "tab": "a\tb",
    "ñandú": "✈ ünïcode",
}


def test_attributes_arrive_exactly_as_published(broker: Broker) -> None:
    """Every attribute comes back as it was published, whatever the broker's own
    format for them (NATS: headers), and so does a message id with edge spaces."""
    odd = replace(outbound(1), message_id=" m 1 ", attributes=AWKWARD)
    broker.publish([odd, outbound(2)])
    got = {d.attributes["message_id"]: d for d in pull_all(broker, 2)}
    assert set(got) == {" m 1 ", "m-2"}
    assert {k: got[" m 1 "].attributes[k] for k in AWKWARD} == AWKWARD
    assert got[" m 1 "].defect is None
    assert got["m-2"].attributes["source"] == "test"
    broker.dead_letter([got[" m 1 "]], reason="line one\nline two")
    broker.ack([got["m-2"]])
    (letter,) = broker.list_dead_letters(limit=10)
    assert letter.reason == "line one\nline two"
    assert letter.message_id == " m 1 "
    assert {k: letter.attributes[k] for k in AWKWARD} == AWKWARD
    assert broker.replay_dead_letters([letter.id]) == 1
    (again,) = pull_all(broker, 1)
    assert {k: again.attributes[k] for k in AWKWARD} == AWKWARD
    assert again.attributes["message_id"] == " m 1 "
    broker.ack([again])


def test_backlog_reports_waiting_messages(harness: Harness, broker: Broker) -> None:
    if harness.name == "pubsub":
        # Pub/Sub's backlog comes from Cloud Monitoring (num_undelivered_messages and
        # oldest_unacked_message_age), not from the client: the adapter says so with None.
        assert broker.backlog() is None
        return
    broker.publish([outbound(i) for i in range(3)])
    backlog = broker.backlog()
    assert backlog is not None
    assert backlog.messages == 3
    assert backlog.oldest_age_seconds is not None
    assert backlog.oldest_age_seconds >= 0
    broker.ack(pull_all(broker, 3))
    drained = broker.backlog()
    assert drained is not None
    assert drained.messages == 0


def test_ping_answers(broker: Broker) -> None:
    broker.ping()


def test_broker_gauges_never_export_a_fake_zero(harness: Harness, broker: Broker) -> None:
    """Where the broker cannot tell its backlog or dead letters (Pub/Sub: the truth is in
    Cloud Monitoring), /metrics has no sample at all for them, not a healthy-looking 0."""
    from prometheus_client.parser import text_string_to_metric_families

    from latam import metrics
    from latam.worker import Worker
    from tests.fakes import MemoryStore

    broker.publish([outbound(i) for i in range(2)])
    Worker(store=MemoryStore(), broker=broker).refresh_gauges()
    exposed, _ = metrics.exposition()
    names = {
        "latam_broker_backlog_messages",
        "latam_broker_oldest_unacked_age_seconds",
        "latam_dead_letter_messages",
    }
    samples = {
        name: [
            s
            for f in text_string_to_metric_families(exposed.decode())
            for s in f.samples
            if s.name == name
        ]
        for name in names
    }
    for name, found in samples.items():
        assert all("broker" in s.labels for s in found), f"{name} exported without its broker"
        mine = [s.value for s in found if s.labels["broker"] == broker.name]
        if broker.name == "pubsub":
            assert mine == [], f"{name} claims {mine} on Pub/Sub, which cannot tell"
        else:
            assert len(mine) == 1, f"{name}: {mine}"
    if broker.name != "pubsub":
        backlog = [
            s.value
            for s in samples["latam_broker_backlog_messages"]
            if s.labels["broker"] == broker.name
        ]
        assert backlog == [2.0]
    broker.ack(pull_all(broker, 2))
