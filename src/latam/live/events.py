"""What a live tail sends: message frames (``Event``) and the reasons a stream ends
(``Ending``), sent as its last event."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from latam.domain import Position
from latam.filters import Filters
from latam.storage.port import StoredMessage, message_json

# Rows per store read of a feed or a catch-up.
READ_ROWS = 500
HEARTBEAT = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    """One message as a stream frame; ``prev`` is the ``seq`` its feed saw before it."""

    prev: int
    seq: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a stream ends: a problem the client is sent as its last event."""

    status: int
    code: str
    detail: str


GONE = Ending(404, "topic-deleted", "the topic was deleted")
TOO_SLOW = Ending(
    429, "stream-too-slow", "the client fell too far behind; reconnect with Last-Event-ID"
)
SHUTDOWN = Ending(503, "shutting-down", "the server is stopping; reconnect with Last-Event-ID")


class TooManyStreams(Exception):
    """This process, or this caller, has as many streams open as allowed."""


def render(topic_id: int, filters: Filters, prev: int, message: StoredMessage) -> Event:
    """The ``message`` frame: its cursor as ``id``, the JSON of reads as ``data``."""
    cursor = Position(message.seq, filters=filters.key).encode(topic_id)
    data = orjson.dumps(message_json(message))
    if b"\n" in data or b"\r" in data:  # stored JSON with line breaks between tokens
        data = orjson.dumps(orjson.loads(data))
    frame = b"id: %s\nevent: message\ndata: %s\n\n" % (cursor.encode(), data)
    return Event(prev, message.seq, frame)
