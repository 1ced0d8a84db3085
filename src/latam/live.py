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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson

from latam import metrics
from latam.domain import Position
from latam.errors import LatamError, NotFound, QueryTooExpensive, TransientError
from latam.filters import Filters
from latam.service import Service
from latam.storage.port import StoredMessage, message_json

log = logging.getLogger(__name__)

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


class Subscription:
    """One client's stream: what it missed, then its feed's events (``follow``)."""

    def __init__(self, tail: LiveTail, topic_id: int, filters: Filters, after: int, caller: str):
        self.tail, self.topic_id, self.filters, self.caller = tail, topic_id, filters, caller
        self.last = after
        self._events: deque[Event] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._ending: Ending | None = None
        self._feed: Feed | None = None
        self.closed = False

    def push(self, events: list[Event]) -> bool:
        """Queue a feed's events; False (and the stream ends) when events are waiting
        already and these would take them past the byte bound. (One read of a feed is
        about the bound at most: a client that keeps up is never cut.)"""
        size = sum(len(event.frame) for event in events)
        if self._events and self._bytes + size > self.tail.queue_bytes:
            self.end(TOO_SLOW)
            return False
        self._events.extend(events)
        self._bytes += size
        self._wake.set()
        return True

    def end(self, ending: Ending) -> None:
        """End the stream after what is queued; the first reason given wins."""
        if self._ending is None:
            self._ending = ending
            self._wake.set()

    async def follow(self) -> AsyncIterator[bytes | Ending]:
        """Frames to send (heartbeats included), then at most one Ending."""
        try:
            async for chunk in self._catch_up(before=None):
                yield chunk
            self._feed = self.tail.join(self)
            while True:
                item = await self._next()
                if isinstance(item, Ending):
                    yield item
                    return
                if isinstance(item, bytes):
                    yield item  # a heartbeat
                    continue
                async for chunk in self._deliver(item):
                    yield chunk
        except NotFound:
            yield GONE
        except QueryTooExpensive as exc:
            yield Ending(422, "query-timeout", exc.detail)
        except TransientError as exc:
            yield Ending(503, "unavailable", exc.detail)

    async def _deliver(self, events: list[Event]) -> AsyncIterator[bytes]:
        frames: list[bytes] = []
        for event in events:
            if event.seq <= self.last:
                continue  # sent already, from the store
            if event.prev > self.last:  # a hole: the feed was ahead of this client
                if frames:
                    yield self._sent(frames)
                async for chunk in self._catch_up(before=event.seq):
                    yield chunk
            frames.append(event.frame)
            self.last = event.seq
        if frames:
            yield self._sent(frames)

    async def _next(self) -> list[Event] | Ending | bytes:
        """Queued events, else the ending, else a heartbeat after an idle interval."""
        if not self._events and self._ending is None:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.tail.heartbeat_seconds)
            except TimeoutError:
                return HEARTBEAT
        if self._events:
            events = list(self._events)
            self._events.clear()
            self._bytes = 0
            return events
        return self._ending or HEARTBEAT

    async def _catch_up(self, *, before: int | None) -> AsyncIterator[bytes]:
        """Read the store after ``last`` up to the end (or the row before ``before``)."""
        service = self.tail.service
        while self._ending is None:
            cursor = Position(self.last, filters=self.filters.key).encode(self.topic_id)
            page = await service.in_store_thread(
                service.read_messages,
                topic_id=self.topic_id,
                limit=READ_ROWS,
                cursor=cursor,
                filters=self.filters,
            )
            rows = [m for m in page.items if before is None or m.seq < before]
            if rows:
                frames = [render(self.topic_id, self.filters, 0, m).frame for m in rows]
                self.last = rows[-1].seq
                yield self._sent(frames)
            if page.next_cursor is None or len(rows) < len(page.items):
                return

    def _sent(self, frames: list[bytes]) -> bytes:
        metrics.STREAM_EVENTS.labels(kind="message").inc(len(frames))
        return b"".join(frames)

    def close(self) -> None:
        """Leave the feed and free the connection's slot (idempotent)."""
        if not self.closed:
            self.closed = True
            self.tail.leave(self)


class Feed:
    """One poll loop for a topic and filters, fanning new messages out to subscriptions."""

    def __init__(self, tail: LiveTail, topic_id: int, filters: Filters, position: int):
        self.tail, self.topic_id, self.filters = tail, topic_id, filters
        self.position = position
        self.subscribers: set[Subscription] = set()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        failures = 0
        try:
            while self.subscribers:
                try:
                    more = await self._poll()
                    failures = 0
                except NotFound:
                    self._end_all(GONE)
                    return
                except TransientError as exc:
                    failures += 1
                    log.warning("live tail cannot read the store: %s", exc.detail)
                    await asyncio.sleep(min(self.tail.poll_seconds * 2**failures, 5.0))
                    continue
                except LatamError as exc:
                    self._end_all(Ending(422, "query-timeout", exc.detail))
                    return
                except Exception:
                    # Ended, not left hanging on heartbeats: the clients reconnect.
                    log.exception("live tail of topic %d failed", self.topic_id)
                    self._end_all(Ending(500, "internal", "the stream failed; reconnect"))
                    return
                if not more:
                    await asyncio.sleep(self.tail.poll_seconds)
        finally:
            self.tail.drop(self)

    async def _poll(self) -> bool:
        """One read after ``position``, sent to every subscriber; whether more follow."""
        service = self.tail.service
        page = await service.in_store_thread(
            service.read_messages,
            topic_id=self.topic_id,
            limit=READ_ROWS,
            cursor=Position(self.position, filters=self.filters.key).encode(self.topic_id),
            filters=self.filters,
            max_bytes=self.tail.queue_bytes,
        )
        events: list[Event] = []
        for message in page.items:
            events.append(render(self.topic_id, self.filters, self.position, message))
            self.position = message.seq
        if events:
            for subscription in list(self.subscribers):
                if not subscription.push(events):
                    self.subscribers.discard(subscription)
        return page.next_cursor is not None

    def _end_all(self, ending: Ending) -> None:
        for subscription in self.subscribers:
            subscription.end(ending)
        self.subscribers.clear()


class LiveTail:
    """The live tails of one API process: feeds by topic and filters, and the limits."""

    def __init__(
        self,
        service: Service,
        *,
        poll_seconds: float,
        heartbeat_seconds: float,
        queue_bytes: int,
        max_connections: int,
        max_per_caller: int,
    ) -> None:
        self.service = service
        self.poll_seconds, self.heartbeat_seconds = poll_seconds, heartbeat_seconds
        self.queue_bytes = queue_bytes
        self.max_connections, self.max_per_caller = max_connections, max_per_caller
        self.feeds: dict[tuple[int, str], Feed] = {}
        self.open_streams: set[Subscription] = set()
        self.per_caller: Counter[str] = Counter()
        self.closing = False

    def open(self, *, topic_id: int, filters: Filters, after: int, caller: str) -> Subscription:
        """A subscription after ``seq`` ``after``; TooManyStreams past a limit."""
        if len(self.open_streams) >= self.max_connections:
            raise TooManyStreams(f"this server has {self.max_connections} streams open")
        if self.per_caller[caller] >= self.max_per_caller:
            raise TooManyStreams(f"at most {self.max_per_caller} open streams per API key")
        subscription = Subscription(self, topic_id, filters, after, caller)
        self.open_streams.add(subscription)
        self.per_caller[caller] += 1
        metrics.STREAMS_OPEN.inc()
        return subscription

    def join(self, subscription: Subscription) -> Feed:
        """The feed of the subscription's topic and filters, started when it has none."""
        key = (subscription.topic_id, subscription.filters.key)
        feed = self.feeds.get(key)
        if feed is None:
            feed = Feed(self, subscription.topic_id, subscription.filters, subscription.last)
            self.feeds[key] = feed
        feed.subscribers.add(subscription)
        if self.closing:
            subscription.end(SHUTDOWN)
        return feed

    def leave(self, subscription: Subscription) -> None:
        self.open_streams.discard(subscription)
        self.per_caller[subscription.caller] -= 1
        if self.per_caller[subscription.caller] <= 0:
            del self.per_caller[subscription.caller]
        metrics.STREAMS_OPEN.dec()
        feed = self.feeds.get((subscription.topic_id, subscription.filters.key))
        if feed is not None:
            feed.subscribers.discard(subscription)

    def drop(self, feed: Feed) -> None:
        if self.feeds.get((feed.topic_id, feed.filters.key)) is feed:
            del self.feeds[(feed.topic_id, feed.filters.key)]

    def close_streams(self) -> None:
        """End every stream (shutdown): clients resume on another process."""
        self.closing = True
        for subscription in list(self.open_streams):
            subscription.end(SHUTDOWN)

    async def aclose(self) -> None:
        self.close_streams()
        tasks = [feed.task for feed in self.feeds.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def closing_on_signals(tail: LiveTail) -> Iterator[None]:
    """End every stream as soon as SIGTERM or SIGINT arrives, then let the server's own
    handler run: the server waits for open responses before it shuts the app down, so
    streams left open would hold every restart for its whole grace period. Only in the
    main thread (where handlers live); the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(sig: int, frame: object) -> None:
        loop.call_soon_threadsafe(tail.close_streams)
        chained = previous[signal.Signals(sig)]
        if callable(chained):
            chained(sig, frame)  # type: ignore[arg-type]
        else:  # the default action (or none): as if this handler had never been here
            signal.signal(sig, chained)
            signal.raise_signal(sig)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, original in previous.items():
            signal.signal(sig, original)
