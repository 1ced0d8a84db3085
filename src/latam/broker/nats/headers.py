"""A message's attributes as NATS headers, carried exactly.

NATS headers cannot hold every attribute: a header name is a token (letters, digits
and ``!#$%&'*+-.^_`|~``; nats-py refuses anything else), a value loses its leading and
trailing whitespace and has its line breaks turned into spaces on the way, a value
beyond ASCII comes back from a stream read (``get_msg``) as an ``email.header.Header``
instead of text, and names starting with ``Nats-`` are JetStream's own. A message whose
attributes all fit is sent with one header per attribute, as a plain NATS producer
sends them; any other message carries all its attributes as one JSON object in the
``Latam-Attributes`` header (JSON escapes control characters and starts and ends with a
brace, so the header survives as written; a stream read's ``Header`` objects are turned
back into text here).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.header import Header, decode_header
from typing import Any

import orjson

from latam.broker.base import read_attributes
from latam.broker.nats.batches import BATCH

PACKED = "Latam-Attributes"
NATS_PREFIX = "Nats-"  # JetStream's own headers
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def to_headers(attributes: Mapping[str, str]) -> dict[str, str]:
    """The headers that carry ``attributes`` exactly."""
    if all(_fits(name, value) for name, value in attributes.items()):
        return dict(attributes)
    return {PACKED: orjson.dumps(dict(attributes)).decode()}


def from_headers(headers: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """The attributes a message's headers carry, without JetStream's own, and
    ``invalid_attributes`` when its ``Latam-Attributes`` is not a JSON object of
    strings (a producer wrote it by hand)."""
    plain = {k: _text(v) for k, v in headers.items() if not k.startswith(NATS_PREFIX)}
    packed = plain.pop(PACKED, None)
    if packed is None:
        return plain, None
    unpacked, defect = read_attributes(packed)
    return {**plain, **unpacked}, defect


def _fits(name: str, value: str) -> bool:
    return (
        _TOKEN.fullmatch(name) is not None
        and not name.startswith(NATS_PREFIX)
        and name not in (PACKED, BATCH)
        and value.isascii()
        and value.isprintable()
        and value == value.strip()
    )


def _text(value: Any) -> str:
    """A header's value as text: nats-py's stream reads (``get_msg``) parse headers
    with ``email``, which returns a value beyond ASCII as a ``Header`` of raw bytes."""
    if not isinstance(value, Header):
        return str(value)
    return "".join(
        part.decode("utf-8", "replace") if isinstance(part, bytes) else part
        for part, _charset in decode_header(value)
    )
