"""Envelope decoding, cursors and validation: pure functions, checked with properties."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latam.broker.base import DeliveryPolicy
from latam.domain import (
    Position,
    decode_cursor,
    decode_envelope,
    decode_position,
    encode_cursor,
    encode_data,
    validate_attributes,
    validate_topic_name,
)
from latam.errors import InvalidMessage, InvalidRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def decode(body: bytes, **attributes: str) -> object:
    return decode_envelope(
        body, attributes, fallback_id="broker-1", fallback_published_at=NOW, max_bytes=1000
    )


def test_envelope_fills_gaps_from_the_broker() -> None:
    message = decode(b'{"a": 1}', topic="t")
    assert message.message_id == "broker-1"  # type: ignore[attr-defined]
    assert message.published_at == NOW  # type: ignore[attr-defined]
    assert message.data == '{"a": 1}'  # stored as sent  # type: ignore[attr-defined]


def test_envelope_keeps_user_attributes_and_reads_its_own() -> None:
    message = decode(
        b"{}", topic="t", message_id="m1", published_at="2026-02-03T04:05:06.5Z", k="v"
    )
    assert message.message_id == "m1"  # type: ignore[attr-defined]
    assert message.attributes == {"k": "v"}  # type: ignore[attr-defined]
    assert message.published_at == datetime(2026, 2, 3, 4, 5, 6, 500000, tzinfo=UTC)  # type: ignore[attr-defined]


def test_latam_topic_names_the_topic_for_clients_that_cannot_send_topic() -> None:
    message = decode(b"{}", latam_topic="flights", gate="B12")
    assert message.topic == "flights"  # type: ignore[attr-defined]
    assert message.attributes == {"gate": "B12"}  # the alias is not a user attribute  # type: ignore[attr-defined]
    both = decode(b"{}", topic="orders", latam_topic="flights")
    assert both.topic == "orders"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "attributes", "reason"),
    [
        (b"{}", {}, "missing_topic"),
        (b"nope", {"topic": "t"}, "invalid_json"),
        (b"[1, 2]", {"topic": "t"}, "not_object"),
        (b'"text"', {"topic": "t"}, "not_object"),
        (b'{"x": "' + b"y" * 2000 + b'"}', {"topic": "t"}, "too_large"),
        (b"{}", {"topic": "t", "published_at": "yesterday"}, "invalid_timestamp"),
        (b"{}", {"topic": "t", "message_id": "x" * 129}, "invalid_id"),
    ],
)
def test_poison_is_classified(body: bytes, attributes: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(body, **attributes)
    assert caught.value.reason == reason


@given(st.binary(max_size=300), st.dictionaries(st.text(max_size=10), st.text(max_size=10)))
def test_decoder_never_fails_unexpectedly(body: bytes, attributes: dict[str, str]) -> None:
    try:
        message = decode_envelope(
            body, attributes, fallback_id="b", fallback_published_at=NOW, max_bytes=1000
        )
    except InvalidMessage:
        return
    assert isinstance(orjson.loads(message.data), dict)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_valid_objects_round_trip(data: dict[str, object]) -> None:
    body = encode_data(data, max_bytes=100_000)
    message = decode_envelope(
        body, {"topic": "t"}, fallback_id="b", fallback_published_at=NOW, max_bytes=100_000
    )
    assert orjson.loads(message.data) == data


@given(st.integers(1, 2**40), st.integers(0, 2**62))
def test_cursor_round_trips(topic_id: int, seq: int) -> None:
    assert decode_cursor(encode_cursor(topic_id, seq), topic_id=topic_id) == seq


@given(st.integers(1, 2**40), st.integers(0, 2**62), st.integers(1, 2**40))
def test_cursor_of_another_topic_is_rejected(topic_id: int, seq: int, other: int) -> None:
    if other == topic_id:
        return
    with pytest.raises(InvalidRequest):
        decode_cursor(encode_cursor(topic_id, seq), topic_id=other)


@given(st.text(max_size=60))
def test_garbled_cursors_are_invalid_requests(cursor: str) -> None:
    try:
        decode_cursor(cursor, topic_id=1)
    except InvalidRequest:
        return
    # Only a well-formed cursor of topic 1 may decode.
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    assert raw.startswith("v1:1:")


@given(
    st.integers(1, 2**40),
    st.integers(0, 2**62),
    st.datetimes(timezones=st.just(UTC)),
)
def test_time_window_cursor_round_trips(topic_id: int, seq: int, at: datetime) -> None:
    position = Position(seq, at)
    assert decode_position(position.encode(topic_id), topic_id=topic_id) == position


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        "v2:1:5",  # a time-window cursor without its time
        "v2:1:1:2:3",
        "v1:1:1:2",  # an ingest-order cursor with a time
        "v2:1:999999999999999999999:1",  # after year 9999
        "v2:1:-99999999999999999999:1",  # before year 1
        "v2:1:0:-1",
        "v2:1:0:9223372036854775808",
        "v3:1:0:1",
    ],
)
def test_malformed_cursors_are_invalid_requests(raw: str) -> None:
    with pytest.raises(InvalidRequest, match="cursor is not valid"):
        decode_position(_raw(raw), topic_id=1)


def test_names_and_attributes_are_validated() -> None:
    assert validate_topic_name("  flights ") == "flights"
    for bad in ("", " ", "x" * 201, "tab\there"):
        with pytest.raises(InvalidRequest):
            validate_topic_name(bad)
    with pytest.raises(InvalidMessage):
        validate_attributes({"message_id": "x"})
    with pytest.raises(InvalidMessage):
        validate_attributes({str(i): "v" for i in range(65)})


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = DeliveryPolicy(backoff_min_seconds=1, backoff_max_seconds=10)
    assert [policy.backoff(n) for n in range(1, 6)] == [1, 2, 4, 8, 10]


def test_attribute_limits_are_in_utf8_bytes_as_on_pubsub() -> None:
    assert validate_attributes({"k": "é" * 512}) == {"k": "é" * 512}  # 1,024 bytes
    with pytest.raises(InvalidMessage, match="bytes"):
        validate_attributes({"k": "é" * 513})  # 513 characters, 1,026 bytes
    with pytest.raises(InvalidMessage):
        validate_attributes({"ñ" * 129: "v"})  # 258 bytes of key
