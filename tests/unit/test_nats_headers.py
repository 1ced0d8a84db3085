"""Attributes as NATS headers: one header each where they fit, one JSON header else."""

from __future__ import annotations

import json

import pytest

from latam.broker.nats.headers import PACKED, from_headers, to_headers

PLAIN = {"topic": "orders", "message_id": "m-1", "published_at": "2026-01-01T00:00:00Z"}


def test_attributes_that_fit_stay_one_header_each() -> None:
    """What a plain NATS consumer or `nats stream view` shows does not change."""
    attributes = {**PLAIN, "source": "a b: c", "X-Trace": "00-ab-cd-01"}
    assert to_headers(attributes) == attributes
    assert from_headers(to_headers(attributes)) == (attributes, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("two words", "x"),
        ("colon:name", "x"),
        ("Nats-Msg-Id", "x"),
        (PACKED, "x"),
        ("padded", " x"),
        ("padded", "x\t"),
        ("lines", "a\nb"),
        ("lines", "a\rb"),
        ("nul", "a\x00b"),
        ("ascii", "✈"),
        ("ñ", "x"),
        ("Latam-Batch", "3"),
    ],
)
def test_one_attribute_that_does_not_fit_packs_them_all(name: str, value: str) -> None:
    attributes = {**PLAIN, name: value}
    headers = to_headers(attributes)
    assert list(headers) == [PACKED]
    assert "\n" not in headers[PACKED]
    assert headers[PACKED] == headers[PACKED].strip()
    assert from_headers({**headers, "Nats-Msg-Id": "dedupe"}) == (attributes, None)


def test_jetstream_headers_are_not_attributes() -> None:
    assert from_headers({"Nats-Msg-Id": "x", "Nats-Expected-Stream": "S", "a": "1"}) == (
        {"a": "1"},
        None,
    )


@pytest.mark.parametrize("packed", ["not json", "[1]", '{"a": 1}', "null"])
def test_a_hand_written_packed_header_that_is_not_an_object_of_strings_is_a_defect(
    packed: str,
) -> None:
    attributes, defect = from_headers({"topic": "orders", PACKED: packed})
    assert defect == "invalid_attributes"
    assert attributes["topic"] == "orders"


def test_packed_attributes_win_over_plain_headers_of_the_same_name() -> None:
    headers = {"topic": "plain", PACKED: json.dumps({"topic": "packed", "k": "v"})}
    assert from_headers(headers) == ({"topic": "packed", "k": "v"}, None)


def test_a_stream_read_header_beyond_ascii_is_text_again() -> None:
    """nats-py's ``get_msg`` parses headers with ``email``: a UTF-8 value comes back as
    a ``Header`` of raw bytes."""
    from email.parser import BytesParser

    raw = to_headers({"ñ": "✈ é"})[PACKED]
    parsed = BytesParser().parsebytes(f"{PACKED}: {raw}\r\n\r\n".encode())
    assert not isinstance(parsed[PACKED], str)
    assert from_headers(dict(parsed.items())) == ({"ñ": "✈ é"}, None)
