"""The live tails of one API process: its feeds, its open streams and their limits, and
their end when the process stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections import Counter
from collections.abc import Iterator

from latam import metrics
from latam.filters import Filters
from latam.live.events import SHUTDOWN, TooManyStreams
from latam.live.feed import Feed
from latam.live.subscription import Subscription
from latam.service import Service


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
