"""A message's attributes as NATS headers, carried exactly.

NATS headers cannot hold every attribute: a header name is a token (letters, digits
and ``!#$%&'*+-.^_`|~``; nats-py refuses anything else), a value loses its leading and
trailing whitespace and has its line breaks turned into spaces on the way, a value
beyond ASCII comes back from a stream read (``get_msg``) as an ``email.header.Header``
instead of text, and names starting with ``Nats-`` are JetStream's own. A message whose
attributes all fit is sent with one header per attribute, as a plain NATS producer
sends them; any other message carries all its attributes as one JSON object in the
``Latam-Attributes`` header, in ASCII (JSON escapes control characters and the rest,
and starts and ends with a brace, so the header survives as written).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from latam.broker.base import read_attributes

PACKED = "Latam-Attributes"
NATS_PREFIX = "Nats-"  # JetStream's own headers
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def to_headers(attributes: Mapping[str, str]) -> dict[str, str]:
    """The headers that carry ``attributes`` exactly."""
    if all(_fits(name, value) for name, value in attributes.items()):
        return dict(attributes)
    return {PACKED: json.dumps(dict(attributes), ensure_ascii=True, separators=(",", ":"))}


def from_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """The attributes a message's headers carry, without JetStream's own, and
    ``invalid_attributes`` when its ``Latam-Attributes`` is not a JSON object of
    strings (a producer wrote it by hand)."""
    plain = {k: v for k, v in headers.items() if not k.startswith(NATS_PREFIX)}
    packed = plain.pop(PACKED, None)
    if packed is None:
        return plain, None
    unpacked, defect = read_attributes(packed)
    return {**plain, **unpacked}, defect


def _fits(name: str, value: str) -> bool:
    return (
        _TOKEN.fullmatch(name) is not None
        and not name.startswith(NATS_PREFIX)
        and name != PACKED
        and value.isascii()
        and value.isprintable()
        and value == value.strip()
    )
