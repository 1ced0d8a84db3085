"""Live tails of topics: each API process polls the store once per topic and filters and
fans the new messages out to every client following them, each of which resumes exactly
after its own cursor.

A subscription first reads what it missed from the store at its own pace, then follows
its feed. Every event carries the ``seq`` of the message its feed saw before it (a feed
reads in ingest order, in which commit order equals ``seq`` order per topic, see
``storage.repository``): a subscription that finds a hole between its last message and
an event reads the hole from the store, and it skips what it has already sent, so
nothing is lost or repeated, wherever it joined. What waits for a slow client is bounded
in bytes; past the bound its stream ends (it resumes with its last cursor).

``events`` holds the frames and endings, ``subscription`` one client's stream, ``feed``
the poll loop of a topic and filters, ``tail`` the process's feeds and limits.
"""

from latam.live.events import (
    GONE,
    HEARTBEAT,
    READ_ROWS,
    SHUTDOWN,
    TOO_SLOW,
    Ending,
    Event,
    TooManyStreams,
    render,
)
from latam.live.feed import Feed
from latam.live.subscription import Subscription
from latam.live.tail import LiveTail, closing_on_signals

__all__ = [
    "GONE",
    "HEARTBEAT",
    "READ_ROWS",
    "SHUTDOWN",
    "TOO_SLOW",
    "Ending",
    "Event",
    "Feed",
    "LiveTail",
    "Subscription",
    "TooManyStreams",
    "closing_on_signals",
    "render",
]
