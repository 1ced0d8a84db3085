"""The poll loop of one topic and filters in one process, fanning what it reads out to
every subscription following them."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from latam.domain import Position
from latam.errors import LatamError, NotFound, TransientError
from latam.filters import Filters
from latam.live.events import GONE, READ_ROWS, Ending, Event, render
from latam.service import Service

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What a feed hands its events to (a ``subscription.Subscription``)."""

    def push(self, events: list[Event]) -> bool: ...
    def end(self, ending: Ending) -> None: ...


class Owner(Protocol):
    """What a feed needs of the process's live tails (a ``tail.LiveTail``)."""

    service: Service
    poll_seconds: float
    queue_bytes: int

    def drop(self, feed: Feed) -> None: ...


class Feed:
    """One poll loop for a topic and filters, fanning new messages out to subscriptions."""

    def __init__(self, tail: Owner, topic_id: int, filters: Filters, position: int):
        self.tail, self.topic_id, self.filters = tail, topic_id, filters
        self.position = position
        self.subscribers: set[Subscriber] = set()
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
