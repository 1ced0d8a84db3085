"""The NATS batch format (``broker.nats.batches``): frames, groups and their limits."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from latam.broker.nats import batches
from latam.domain import OutboundMessage

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def message(i: int, body: bytes = b'{"n":1}') -> OutboundMessage:
    return OutboundMessage("orders", f"m-{i}", body, {"k": "v\n"}, NOW)


def test_frames_unpack_to_each_message_attributes_and_body() -> None:
    messages = [message(i, orjson.dumps({"n": i})) for i in range(3)]
    (group,) = batches.chunks(messages, 10_000)
    members = batches.unpack(b"".join(frame for _, frame in group), 3)
    assert members is not None
    assert [orjson.loads(a) for a, _ in members] == [m.wire_attributes() for m in messages]
    assert [b for _, b in members] == [m.body for m in messages]


def test_groups_keep_order_and_respect_both_limits() -> None:
    many = [message(i) for i in range(2001)]
    assert [len(g) for g in batches.chunks(many, 10**9)] == [1000, 1000, 1]
    big = [message(i, b"x" * 400) for i in range(5)]
    frame = len(next(iter(batches.chunks(big[:1], 10**9)))[0][1])
    groups = list(batches.chunks(big, 2 * frame))
    assert [len(g) for g in groups] == [2, 2, 1]
    assert [m.message_id for g in groups for m, _ in g] == [m.message_id for m in big]
    assert [len(g) for g in batches.chunks(big, 10)] == [1] * 5  # each alone, too big


def test_a_body_that_is_not_exactly_its_count_of_frames_is_refused() -> None:
    (group,) = batches.chunks([message(1), message(2)], 10_000)
    body = b"".join(frame for _, frame in group)
    assert batches.unpack(body, 2) is not None
    for count in (1, 3):
        assert batches.unpack(body, count) is None
    assert batches.unpack(body[:-1], 2) is None
    assert batches.unpack(body + b"\x00", 2) is None
    assert batches.unpack(b"", 0) == []


def test_subjects_name_their_count_and_dedupe_ids_their_messages() -> None:
    assert batches.subject("LATAM", 12) == "LATAM._batch.12"
    assert batches.count_of("LATAM._batch.12") == 12
    assert batches.count_of("LATAM._batch.x") == 1
    assert batches.parse_count("1000") == 1000
    assert batches.count_of("LATAM._batch.9999999") == 1
    for text in ("", "x", "-1", "1.5", "²", "\uff11", "1001", "9" * 5000):
        assert batches.parse_count(text) == 0
    assert batches.every_subject("LATAM") == "LATAM._batch.*"
    assert batches.dedupe_id(["a", "b"]) == batches.dedupe_id(["a", "b"])
    assert batches.dedupe_id(["a", "b"]) != batches.dedupe_id(["b", "a"])
    assert batches.dedupe_id(["a\nb"]) != batches.dedupe_id(["a", "b"])
