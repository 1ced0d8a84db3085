"""NATS batches (``broker.nats.batches``) against the real server: a publish of several
messages is a few NATS messages; each message of a batch is a delivery of its own; the
NATS message is settled once all of them are; a batch written badly by hand is set aside
whole; the backlog counts messages, not NATS messages."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from latam.broker.base import Delivery, DeliveryPolicy
from latam.broker.nats import batches
from latam.broker.nats.adapter import MAX_FETCH, NatsBroker
from latam.broker.nats.admin import dead_letter_window
from latam.domain import OutboundMessage
from tests.contract.brokers import NatsHarness, nats_harness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[NatsHarness]:
    with nats_harness(tmp_path) as made:
        assert isinstance(made, NatsHarness)
        yield made


def make(harness: NatsHarness, **policy: float) -> NatsBroker:
    values = {"ack_deadline_seconds": 2.0, "max_in_flight": 5000, **policy}
    broker = harness.make(DeliveryPolicy(**values))  # type: ignore[arg-type]
    assert isinstance(broker, NatsBroker)
    return broker


def message(i: int, *, pad: int = 0) -> OutboundMessage:
    body = orjson.dumps({"n": i, "pad": "x" * pad})
    return OutboundMessage("orders", f"m-{i}", body, {"i": str(i)}, datetime.now(UTC))


def stream_messages(broker: NatsBroker) -> int:
    async def go() -> int:
        js = await broker._ready()
        return int((await js.stream_info(broker.config.stream)).state.messages)

    return broker._link.run(go())


def pull(broker: NatsBroker, expected: int, *, most: int = 5000) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + 20
    while len(got) < expected and time.monotonic() < deadline:
        got += broker.pull(max_messages=min(most, expected - len(got)), timeout=0.5)
    return got


def test_a_publish_of_many_is_a_few_nats_messages_and_the_backlog_counts_messages(
    harness: NatsHarness,
) -> None:
    broker = make(harness)
    broker.publish([message(i) for i in range(2500)])
    broker.publish([message(9999)])  # alone: a plain NATS message
    assert stream_messages(broker) == 4  # 1,000 + 1,000 + 500, and the one alone
    assert broker.backlog().messages == 2501
    got = pull(broker, 2501)
    assert sorted(int(d.attributes["i"]) for d in got) == [*range(2500), 9999]
    assert len({d.handle for d in got}) == 2501
    assert all(d.delivery_attempt == 1 and d.defect is None for d in got)
    assert orjson.loads(got[0].body) == {"n": 0, "pad": ""}
    broker.ack(got)
    assert broker.backlog().messages == 0
    broker.close()


def test_batches_stay_within_the_server_max_payload(harness: NatsHarness) -> None:
    broker = make(harness)
    broker.publish([message(i, pad=300_000) for i in range(7)])  # 2.1 MB in all
    assert stream_messages(broker) == 3  # three, three and one under 1 MB each
    got = pull(broker, 7)
    assert sorted(orjson.loads(d.body)["n"] for d in got) == list(range(7))
    broker.ack(got)
    broker.close()


def test_a_batch_is_handed_out_within_room_and_flow_control(harness: NatsHarness) -> None:
    broker = make(harness, max_in_flight=2)
    broker.publish([message(i) for i in range(3)])
    first = broker.pull(max_messages=1, timeout=2)
    second = broker.pull(max_messages=5, timeout=2)
    assert [len(first), len(second)] == [1, 1]
    assert broker.pull(max_messages=5, timeout=0.2) == []  # two in flight
    broker.ack(first)
    third = broker.pull(max_messages=5, timeout=2)
    assert [d.attributes["i"] for d in first + second + third] == ["0", "1", "2"]
    broker.ack(second + third)
    assert broker.backlog().messages == 0
    broker.close()


def test_a_batch_comes_back_whole_when_one_message_is_handed_back(
    harness: NatsHarness,
) -> None:
    broker = make(harness)
    broker.publish([message(i) for i in range(3)])
    got = pull(broker, 3)
    broker.ack(got[:2])
    assert broker.backlog().messages == 3  # nothing settled on the server yet
    broker.nack(got[2:], reason="store_unavailable", delay=0.5)
    again = pull(broker, 3)
    assert sorted(d.attributes["i"] for d in again) == ["0", "1", "2"]
    assert {d.delivery_attempt for d in again} == {2}
    broker.ack(again)
    assert broker.backlog().messages == 0
    broker.close()


def test_a_message_set_aside_leaves_its_batch_acked(harness: NatsHarness) -> None:
    broker = make(harness)
    broker.publish([message(i) for i in range(3)])
    got = pull(broker, 3)
    broker.dead_letter(got[1:2], reason="invalid_json")
    broker.ack(got[::2])
    assert broker.pull(max_messages=5, timeout=2.5) == []  # past the ack wait: settled
    assert broker.backlog().messages == 0
    (letter,) = broker.list_dead_letters(limit=10)
    assert (letter.message_id, letter.reason, letter.attributes["i"]) == (
        "m-1",
        "invalid_json",
        "1",
    )
    broker.close()


def test_an_unsettled_batch_is_delivered_again_to_a_new_client(harness: NatsHarness) -> None:
    broker = make(harness)
    broker.publish([message(i) for i in range(3)])
    held = pull(broker, 3)
    broker.ack(held[:1])
    broker.close()  # dies holding two of them
    successor = make(harness)
    again = pull(successor, 3)  # after the ack wait, all three
    assert sorted(d.attributes["i"] for d in again) == ["0", "1", "2"]
    successor.ack(again)
    successor.close()


def frame(attributes: bytes, body: bytes) -> bytes:
    return struct.pack(">II", len(attributes), len(body)) + attributes + body


GOOD = frame(b'{"topic":"orders","message_id":"a"}', b'{"n":1}')


@pytest.mark.parametrize(
    ("count", "body"),
    [
        ("2", GOOD),  # fewer messages than it says
        ("1", GOOD + GOOD),  # more
        ("1", GOOD[:-1]),  # cut short
        ("1", b"\x00\x00"),  # not even the lengths
        ("0", b""),
        ("two", GOOD),
        ("1001", GOOD * 1001),  # more than a batch holds, however well framed
        ("²", GOOD),
        ("9" * 5000, GOOD),
        ("1", b'{"plain": "json"}'),
    ],
)
def test_a_batch_written_badly_by_hand_is_set_aside_whole(
    harness: NatsHarness, count: str, body: bytes
) -> None:
    broker = make(harness)
    harness.publish_raw(body, {"topic": "orders", batches.BATCH: count})
    (delivery,) = pull(broker, 1)
    assert delivery.defect == "invalid_body"
    assert delivery.body == body
    broker.dead_letter([delivery], reason="invalid_body")
    assert broker.backlog().messages == 0
    broker.close()


def test_a_message_of_a_batch_with_unreadable_attributes_is_the_only_one_set_aside(
    harness: NatsHarness,
) -> None:
    broker = make(harness)
    body = GOOD + frame(b'{"topic": 1}', b"{}") + frame(b"not json", b"{}")
    harness.publish_raw(body, {batches.BATCH: "3"})
    got = pull(broker, 3)
    assert [d.defect for d in got] == [None, "invalid_attributes", "invalid_attributes"]
    assert got[0].attributes == {"topic": "orders", "message_id": "a"}
    broker.ack(got)
    broker.close()


def test_a_fetch_asks_for_a_bounded_number_of_nats_messages(harness: NatsHarness) -> None:
    """A fetch is held whole until it is handed out: so it asks for at most MAX_FETCH
    NATS messages (and fewer once batches were seen), whatever ``max_messages`` is."""
    broker = make(harness)
    broker.publish([message(1000)])  # alone: a plain NATS message
    for start in range(0, 200, 2):
        broker.publish([message(start), message(start + 1)])  # 100 batches of two
    alone = broker.pull(max_messages=1000, timeout=2)  # a first fetch takes one
    assert len(alone) == 1
    broker.ack(alone)
    first = broker.pull(max_messages=1000, timeout=2)  # a fetch after plain ones
    assert len(first) == 2 * MAX_FETCH
    broker.ack(first)
    rest = pull(broker, 200 - len(first))
    assert sorted(int(d.attributes["i"]) for d in first + rest) == list(range(200))
    broker.ack(rest)
    # After batches of two, a fetch asks for room / 2 NATS messages (within MAX_FETCH).
    for start in range(500, 508, 2):  # new ids: the same ones again would be duplicates
        broker.publish([message(start), message(start + 1)])
    assert len(broker.pull(max_messages=5, timeout=2)) == 4
    broker.close()


def test_the_same_batch_published_again_is_dropped_as_a_duplicate(harness: NatsHarness) -> None:
    """A client's retry of a request publishes the same batch: JetStream's duplicate
    window drops it; a batch with one more message is new (the store drops the rest)."""
    broker = make(harness)
    broker.publish([message(i) for i in range(3)])
    broker.publish([message(i) for i in range(3)])
    assert (stream_messages(broker), broker.backlog().messages) == (1, 3)
    broker.publish([message(i) for i in range(4)])
    assert (stream_messages(broker), broker.backlog().messages) == (2, 7)
    broker.ack(pull(broker, 7))
    broker.close()


def test_an_attribute_named_like_the_batch_header_is_no_batch(harness: NatsHarness) -> None:
    broker = make(harness)
    odd = OutboundMessage("orders", "m-1", b"{}", {batches.BATCH: "3"}, datetime.now(UTC))
    broker.publish([odd])  # alone: the plain form, with its attributes in one JSON header
    (got,) = pull(broker, 1)
    assert (got.defect, got.attributes[batches.BATCH]) == (None, "3")
    broker.dead_letter([got], reason="unknown_topic")
    (letter,) = broker.list_dead_letters(limit=10)
    assert broker.replay_dead_letters([letter.id]) == 1
    (again,) = pull(broker, 1)
    assert (again.defect, again.attributes[batches.BATCH]) == (None, "3")
    broker.ack([again])
    broker.close()


def test_messages_waiting_in_the_worker_do_not_outlive_the_ack_wait(
    harness: NatsHarness,
) -> None:
    """Messages fetched but not handed out yet keep their NATS message in progress: a
    worker that takes longer than the ack wait to get to them sees no redelivery."""
    broker = make(harness, ack_deadline_seconds=1.5)
    other = make(harness, ack_deadline_seconds=1.5)  # a second worker on the consumer
    broker.publish([message(i) for i in range(6)])
    handed = broker.pull(max_messages=2, timeout=2)
    redelivered: list[Delivery] = []
    for _ in range(5):  # 2.5 s in all, past the ack wait, with some still waiting
        redelivered += other.pull(max_messages=10, timeout=0.5)
        handed += broker.pull(max_messages=1, timeout=0.1)
    handed += pull(broker, 6 - len(handed))
    assert redelivered == []
    assert sorted(d.attributes["i"] for d in handed) == [str(i) for i in range(6)]
    assert {d.delivery_attempt for d in handed} == {1}
    broker.ack(handed)
    assert other.pull(max_messages=10, timeout=2) == []  # settled once, nothing back
    broker.close()
    other.close()


def test_a_batch_an_earlier_worker_set_aside_is_replayed_as_the_batch_it_was(
    harness: NatsHarness,
) -> None:
    """During a rollout a worker of the release before batches copies a batch whole to
    the dead-letter stream, with its headers as they were: replayed, it is read as the
    batch it is (a user attribute of that name, packed, is not)."""
    broker = make(harness)
    (group,) = batches.chunks([message(1), message(2)], 10**6)
    body = b"".join(frame for _, frame in group)
    stamp = {
        "reason": "invalid_json",
        "delivery_attempts": "1",
        "topic": "_batch.2",
        batches.BATCH: "2",
    }

    async def copy_as_an_earlier_worker_did() -> None:
        js = await broker._ready()
        await js.publish(broker.config.dead_letter_stream, body, headers=stamp)

    broker._link.run(copy_as_an_earlier_worker_did())
    (letter,) = broker.list_dead_letters(limit=10)
    assert broker.replay_dead_letters([letter.id]) == 1
    got = pull(broker, 2)
    assert sorted(d.attributes["message_id"] for d in got) == ["m-1", "m-2"]
    assert {d.defect for d in got} == {None}
    broker.ack(got)
    broker.close()


def dead_letter_stream_window(broker: NatsBroker) -> float:
    async def go() -> float:
        js = await broker._ready()
        info = await js.stream_info(broker.config.dead_letter_stream)
        return float(info.config.duplicate_window)

    return broker._link.run(go())


def test_the_dead_letter_stream_remembers_a_copy_as_long_as_its_batch_can_come_back(
    harness: NatsHarness,
) -> None:
    """A message set aside comes back with its batch while another message of it is
    handed back; its copy's ``Nats-Msg-Id`` must still be remembered then, or it is set
    aside twice. JetStream's default window (2 minutes) is shorter than that."""
    harness.publish_raw(b"{}", {"topic": "orders"})  # both streams, JetStream's defaults
    policy = {"max_delivery_attempts": 5, "backoff_max_seconds": 60, "ack_deadline_seconds": 30}
    broker = make(harness, **policy)
    try:
        window = dead_letter_stream_window(broker)
        assert window == dead_letter_window(DeliveryPolicy(**policy))  # type: ignore[arg-type]
        assert window >= 5 * (60 + 30)  # every redelivery, a full backoff or ack wait apart
    finally:
        broker.close()
    longer = make(harness, **{**policy, "backoff_max_seconds": 600})
    try:
        assert dead_letter_stream_window(longer) > window  # widened for a longer policy
    finally:
        longer.close()
    shorter = make(harness, **policy, max_in_flight=10)  # never narrowed again
    try:
        assert dead_letter_stream_window(shorter) > window
    finally:
        shorter.close()


def test_a_message_set_aside_that_comes_back_with_its_batch_is_one_dead_letter(
    harness: NatsHarness,
) -> None:
    broker = make(harness)
    broker.publish([message(i) for i in range(3)])
    got = sorted(pull(broker, 3), key=lambda d: d.attributes["i"])
    broker.dead_letter(got[0:1], reason="invalid_json")
    broker.ack(got[1:2])
    broker.nack(got[2:3], reason="store_unavailable", delay=0.2)
    again = sorted(pull(broker, 3), key=lambda d: d.attributes["i"])
    assert [d.attributes["i"] for d in again] == ["0", "1", "2"]  # the batch, whole
    broker.dead_letter(again[0:1], reason="invalid_json")  # as the worker would, again
    broker.ack(again[1:])
    assert [letter.message_id for letter in broker.list_dead_letters(limit=10)] == ["m-0"]
    broker.close()


def test_a_dead_letter_stream_with_a_short_max_age_keeps_working(harness: NatsHarness) -> None:
    """JetStream refuses a duplicate window longer than the stream's max_age: the window
    stops at the age, and the broker still publishes and delivers."""
    from nats.js.api import StorageType

    from latam.broker.nats.config import parse_nats_url
    from latam.broker.nats.link import NatsLink

    config = parse_nats_url(harness.url)
    link = NatsLink(config.server)

    async def made_by_hand() -> None:
        js = await link.connect()
        await js.add_stream(
            name=config.dead_letter_stream,
            subjects=[config.dead_letter_stream],
            storage=StorageType.FILE,
            max_age=600,
        )

    try:
        link.run(made_by_hand())
    finally:
        link.close()
    broker = make(harness, max_delivery_attempts=5, backoff_max_seconds=600)  # > 600 s
    try:
        broker.publish([message(1)])
        got = pull(broker, 1)
        broker.dead_letter(got, reason="invalid_json")
        assert [letter.message_id for letter in broker.list_dead_letters(limit=5)] == ["m-1"]
        assert dead_letter_stream_window(broker) == 600
    finally:
        broker.close()
