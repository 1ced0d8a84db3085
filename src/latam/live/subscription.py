"""One client's live tail: what it missed, read from the store, then its feed's events."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from latam import metrics
from latam.domain import Position
from latam.errors import NotFound, QueryTooExpensive, TransientError
from latam.filters import Filters
from latam.live.events import GONE, HEARTBEAT, READ_ROWS, TOO_SLOW, Ending, Event, render
from latam.service import Service


class Hub(Protocol):
    """What a subscription needs of the process's live tails (a ``tail.LiveTail``)."""

    service: Service
    heartbeat_seconds: float
    queue_bytes: int

    def join(self, subscription: Subscription) -> object: ...
    def leave(self, subscription: Subscription) -> None: ...


class Subscription:
    """One client's stream: what it missed, then its feed's events (``follow``)."""

    def __init__(self, tail: Hub, topic_id: int, filters: Filters, after: int, caller: str):
        self.tail, self.topic_id, self.filters, self.caller = tail, topic_id, filters, caller
        self.last = after
        self._events: deque[Event] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._ending: Ending | None = None
        self._feed: object = None  # the feed it follows, once joined
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
