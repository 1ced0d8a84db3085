"""Use cases shared by the HTTP API and the CLI: topics, publishing, reading, dead letters.

Keyword-only functions over the two ports; no HTTP, no SQL, no broker specifics here.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import orjson
from anyio import CapacityLimiter
from anyio.to_thread import run_sync

from latam import metrics
from latam.broker.base import Broker, DeadLetter
from latam.domain import (
    BUCKET_SECONDS,
    OutboundMessage,
    Position,
    Topic,
    decode_cursor,
    decode_position,
    encode_cursor,
    encode_data,
    new_message_id,
    utcnow,
    validate_attributes,
    validate_message_id,
    validate_topic_name,
)
from latam.errors import InvalidRequest, NotFound, StoreUnavailable
from latam.health import check_dependencies
from latam.ingest import Ingest
from latam.storage.port import (
    Bucket,
    PageReader,
    PageRequest,
    RenderedPages,
    Store,
    StoredMessage,
    TopicTotals,
)

# What a page read before it waits for a turn may carry (and, on the embedded store, what
# a page read on the event loop may carry): its cost is bounded by it.
SMALL_PAGE_BYTES = 128 * 1024

# Bounds the size of one stats response; a wider range must use a larger bucket.
MAX_BUCKETS = 10_000


def _too_many_buckets(bucket: str) -> InvalidRequest:
    return InvalidRequest(
        f"the range spans more than {MAX_BUCKETS} {bucket} buckets; "
        "narrow since/until or pick a larger bucket",
        field="bucket",
    )


Params = ParamSpec("Params")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One message as a producer sends it."""

    data: Mapping[str, Any]
    attributes: Mapping[str, str]
    id: str | None = None


@dataclass(frozen=True, slots=True)
class MessagePage:
    """A page of stored messages, the cursor of the next page (None on the last one)
    and the cursor to resume after this page later, to see only newer messages."""

    items: list[StoredMessage]
    next_cursor: str | None
    tail_cursor: str | None


@dataclass(frozen=True, slots=True)
class TopicPage:
    """A page of topics and the cursor of the next one."""

    items: list[Topic]
    next_cursor: str | None


@dataclass
class Service:
    """The application: one instance per process, built by ``bootstrap``."""

    store: Store
    broker: Broker
    max_message_bytes: int
    # A page of messages stops at this many bytes of data and attributes (at least one row).
    max_page_bytes: int = 4 * 1024 * 1024
    # How pages of messages are read as JSON: the store's own reader
    # (``bootstrap.page_reader``), else ``RenderedPages`` over ``store`` (``page_reader``).
    pages: PageReader | None = None
    # Store calls the API makes from threads (``in_store_thread``) wait for one of these:
    # as many as the store's pool keeps connections (``bootstrap.store_limiter``). More
    # at once would open and close a connection per call; None: the default thread pool.
    store_limiter: CapacityLimiter | None = None
    # Topic names last read, so publishing goes on (into the broker) while the store is down.
    known_topics: dict[int, str] = field(default_factory=dict, repr=False)
    # How long a readiness answer is reused: probes and anyone else calling /readyz (it is
    # public) cost the dependencies one check per process per interval at most.
    readiness_ttl: float = 1.0
    _readiness: tuple[float, dict[str, str | None]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The worker's ingest, for messages that reach the API (Pub/Sub push).
        self.ingest = Ingest(self.store, self.max_message_bytes)
        self.page_reader: PageReader = self.pages or RenderedPages(self.store)

    async def in_store_thread(
        self, call: Callable[Params, Result], /, *args: Params.args, **kwargs: Params.kwargs
    ) -> Result:
        """``call`` in a worker thread, behind ``store_limiter``."""
        return await run_sync(functools.partial(call, *args, **kwargs), limiter=self.store_limiter)

    # -- topics -----------------------------------------------------------------------
    def create_topic(self, *, name: str) -> Topic:
        return self.store.create_topic(validate_topic_name(name))

    def get_topic(self, *, topic_id: int) -> Topic:
        return self.store.get_topic(topic_id)

    def list_topics(self, *, limit: int, cursor: str | None = None) -> TopicPage:
        after = decode_cursor(cursor, topic_id=0) if cursor else 0
        items = self.store.list_topics(limit=limit + 1, after_id=after)
        more = len(items) > limit
        items = items[:limit]
        return TopicPage(items, encode_cursor(0, items[-1].id) if more else None)

    def rename_topic(self, *, topic_id: int, name: str) -> Topic:
        return self.store.rename_topic(topic_id, validate_topic_name(name))

    def delete_topic(self, *, topic_id: int) -> None:
        self.store.delete_topic(topic_id)

    # -- messages ---------------------------------------------------------------------
    def publish(
        self, *, topic_id: int, items: Sequence[PublishItem], traceparent: str | None = None
    ) -> list[str]:
        """Validate and hand the messages to the broker; returns once they are durable."""
        topic_name = self._topic_name(topic_id)
        now = utcnow()
        outbound = [
            OutboundMessage(
                topic=topic_name,
                topic_id=topic_id,
                message_id=validate_message_id(item.id) if item.id else new_message_id(),
                body=encode_data(item.data, max_bytes=self.max_message_bytes),
                attributes=validate_attributes(item.attributes),
                published_at=now,
                traceparent=traceparent,
            )
            for item in items
        ]
        self.broker.publish(outbound)
        metrics.MESSAGES_PUBLISHED.labels(topic=topic_name).inc(len(outbound))
        return [message.message_id for message in outbound]

    def _topic_name(self, topic_id: int) -> str:
        """The topic's name from the store; the last one read while the store is down."""
        try:
            name = self.store.get_topic(topic_id).name
        except StoreUnavailable:
            if topic_id not in self.known_topics:
                raise
            return self.known_topics[topic_id]
        self.known_topics[topic_id] = name
        return name

    def read_messages(
        self,
        *,
        topic_id: int,
        limit: int,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_bytes: int | None = None,
    ) -> MessagePage:
        """A page of at most ``limit`` rows and ``max_page_bytes`` (or ``max_bytes``,
        when lower) of data and attributes."""
        after = _page_start(topic_id, cursor, since, until)
        items, more = self.store.page_messages(
            topic_id,
            limit=limit,
            max_bytes=min(max_bytes or self.max_page_bytes, self.max_page_bytes),
            after_seq=after.seq,
            after_time=after.published_at,
            since=since,
            until=until,
        )
        if not items:
            self.store.get_topic(topic_id)  # an empty page of a missing topic is a 404
        last = cursor
        if items:
            last = _cursor(topic_id, items[-1].seq, items[-1].published_at, since, until)
        return MessagePage(items, last if more else None, last)

    async def read_page(
        self,
        *,
        topic_id: int,
        limit: int,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        slots: AbstractAsyncContextManager[Any] | None = None,
    ) -> bytes:
        """The response body of a page of messages (``{"data": [...], "next_cursor",
        "tail_cursor"}``) as the store's page reader builds it.

        A page is first read with a budget of ``SMALL_PAGE_BYTES``; one that may have
        been cut by it (fewer rows than asked, more to come) is read again with the full
        ``max_page_bytes``, as a heavy page, after waiting for one of ``slots``: heavy
        readers wait for each other, never in front of small reads.
        """
        after = _page_start(topic_id, cursor, since, until)
        request = PageRequest(
            topic_id,
            limit,
            min(SMALL_PAGE_BYTES, self.max_page_bytes),
            after.seq,
            after.published_at,
            since,
            until,
        )
        first_try = self.max_page_bytes > SMALL_PAGE_BYTES
        page = await self.page_reader.page(request, heavy=False, first_try=first_try)
        heavy = first_try and page.more and page.rows < limit
        if heavy:
            request = replace(request, max_bytes=self.max_page_bytes)
            async with slots or contextlib.nullcontext():
                page = await self.page_reader.page(request, heavy=True)
        if not page.topic_exists:
            raise NotFound(f"topic {topic_id} does not exist")
        tail = _cursor(topic_id, *page.last, since, until) if page.last else cursor
        cursors = orjson.dumps({"next_cursor": tail if page.more else None, "tail_cursor": tail})
        parts = (b'{"data":', page.array, b",", cursors[1:])
        # One copy of the array; a heavy page's (megabytes) off the event loop.
        return await run_sync(b"".join, parts) if heavy else b"".join(parts)

    # -- analytics --------------------------------------------------------------------
    def topic_stats(
        self,
        *,
        topic_id: int,
        bucket: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Bucket]:
        """Count and bytes per time bucket; at most ``MAX_BUCKETS`` buckets."""
        if bucket not in BUCKET_SECONDS:
            raise InvalidRequest(
                f"bucket must be one of {', '.join(BUCKET_SECONDS)}", field="bucket"
            )
        if since is not None and until is not None and since > until:
            raise InvalidRequest("since must not be after until", field="since")
        span = (until - since).total_seconds() if since and until else 0.0
        if span / BUCKET_SECONDS[bucket] > MAX_BUCKETS:
            raise _too_many_buckets(bucket)
        # One more than allowed tells an open-ended range that is too wide from one that fits.
        buckets = self.store.topic_stats(
            topic_id, bucket=bucket, since=since, until=until, limit=MAX_BUCKETS + 1
        )
        if len(buckets) > MAX_BUCKETS:
            raise _too_many_buckets(bucket)
        return buckets

    def all_stats(self) -> list[TopicTotals]:
        """Totals per topic, topics without messages included."""
        return self.store.all_stats()

    # -- dead letters -----------------------------------------------------------------
    def list_dead_letters(self, *, limit: int, cursor: str | None = None) -> list[DeadLetter]:
        """Oldest first: ``limit`` at most, cut after ``max_page_bytes`` as pages are."""
        return self.broker.list_dead_letters(
            limit=limit, after=cursor, max_bytes=self.max_page_bytes
        )

    def get_dead_letter(self, *, dead_letter_id: str) -> DeadLetter:
        return self.broker.get_dead_letter(dead_letter_id)

    def replay_dead_letters(self, *, ids: Sequence[str] | None = None) -> int:
        return self.broker.replay_dead_letters(ids)

    def purge_dead_letters(self, *, ids: Sequence[str] | None = None) -> int:
        return self.broker.purge_dead_letters(ids)

    # -- health -----------------------------------------------------------------------
    def readiness(self) -> dict[str, str | None]:
        """Per dependency, None when it answers, else what is wrong (at most
        ``readiness_ttl`` seconds old)."""
        now = time.monotonic()
        last = self._readiness
        if last is not None and now - last[0] < self.readiness_ttl:
            return dict(last[1])
        found = check_dependencies(self.store, self.broker)
        self._readiness = (now, found)
        return dict(found)


def _page_start(
    topic_id: int, cursor: str | None, since: datetime | None, until: datetime | None
) -> Position:
    """Where a page starts, once the cursor and time window are checked: a cursor of a
    page with a time window continues only such a page, and one without only one without
    (the two walk different orders, see ``domain.Position``)."""
    if since is not None and until is not None and since > until:
        raise InvalidRequest("since must not be after until", field="since")
    if not cursor:
        return Position()
    position = decode_position(cursor, topic_id=topic_id)
    windowed = since is not None or until is not None
    if windowed and position.published_at is None:
        raise InvalidRequest(
            "this cursor is from a page without since/until; a page with a time window"
            " starts without a cursor and continues with the cursors it returns",
            field="cursor",
        )
    if not windowed and position.published_at is not None:
        raise InvalidRequest(
            "this cursor is from a page with since/until; pass the same window again",
            field="cursor",
        )
    return position


def _cursor(
    topic_id: int,
    seq: int,
    published_at: datetime,
    since: datetime | None,
    until: datetime | None,
) -> str:
    """The cursor after a row, in the order its page walked."""
    windowed = since is not None or until is not None
    return Position(seq, published_at if windowed else None).encode(topic_id)
