"""Use cases shared by the HTTP API and the CLI: topics, publishing, reading, dead letters.

Keyword-only functions over the two ports; no HTTP, no SQL, no broker specifics here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast

import orjson
from anyio import CapacityLimiter
from anyio.to_thread import run_sync

from latam import metrics
from latam.aggregates import MAX_ROWS as MAX_AGGREGATE_ROWS
from latam.aggregates import AggregateQuery, AggregateRow, in_order, too_many_rows
from latam.broker.base import Backlog, Broker, DeadLetter, letter_bytes
from latam.contracts import Contracts
from latam.domain import (
    ATTR_TOPIC_ID,
    BUCKET_SECONDS,
    RESERVED_ATTRIBUTES,
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
    validate_retention,
    validate_topic_name,
)
from latam.errors import (
    Conflict,
    InvalidQuery,
    InvalidRequest,
    NotFound,
    SchemaViolation,
    StoreUnavailable,
)
from latam.filters import NO_FILTERS, Filters
from latam.health import check_dependencies
from latam.ingest import Ingest
from latam.jsonschemas import MAX_VIOLATIONS
from latam.retention import Retention
from latam.storage.port import (
    LOOP_ROWS,
    Bucket,
    PageReader,
    PageRequest,
    RenderedPages,
    SchemaVersion,
    StatsReader,
    StatsVersion,
    Store,
    StoredMessage,
    TopicTotals,
)

# What a page read before it waits for a turn may carry (and, on the embedded store, what
# a page read on the event loop may carry): its cost is bounded by it.
SMALL_PAGE_BYTES = 128 * 1024

# Bounds the size of one stats response; a wider range must use a larger bucket.
MAX_BUCKETS = 10_000

Params = ParamSpec("Params")
Result = TypeVar("Result")
Rendered = TypeVar("Rendered")


class StatsCache:
    """Stats answers kept with the stats version they were read at (``Store.stats_version``):
    an answer is given again only while the version it was read at is still the current
    one, so it is exactly what reading again would give. Dashboards poll the same topics
    and ranges far more often than most topics change; a kept answer costs the store one
    primary-key lookup (every topic's version, for ``/v1/stats``) instead of its buckets.

    Bounded by ``max_bytes`` (least recently used out first), and no answer is kept longer
    than ``max_seconds``: a writer that does not raise the versions (one of the release
    before them, still running during a rollout) or a database restored under a running
    API cannot make an answer wrong for longer than that. Used on the event loop only."""

    def __init__(self, max_bytes: int, max_seconds: float = 60.0) -> None:
        from cachetools import TTLCache

        self.max_bytes = max_bytes
        self._kept: TTLCache[Hashable, tuple[StatsVersion, Any]] = TTLCache(
            maxsize=max(max_bytes, 1), ttl=max_seconds, getsizeof=_kept_size
        )

    def get(self, key: Hashable, version: StatsVersion) -> Any | None:
        kept = self._kept.get(key)
        if kept is None or kept[0] != version:
            metrics.STATS_CACHE.labels("miss" if kept is None else "stale").inc()
            return None
        metrics.STATS_CACHE.labels("hit").inc()
        return kept[1]

    def put(self, key: Hashable, version: StatsVersion, answer: Any) -> None:
        entry = (version, answer)
        if _kept_size(entry) <= self.max_bytes:
            self._kept[key] = entry


def _kept_size(entry: tuple[StatsVersion, Any]) -> int:
    """Bytes an answer holds, with room to spare: its body, its version's pairs (about
    120 bytes each), and its key and the cache's own links (under 700 bytes, measured)."""
    return sys.getsizeof(entry[1]) + 120 * len(entry[0]) + 700


class FreshReads:
    """Concurrent reads of the same key share one read that started after each of them
    asked: a caller joins the read that has not started yet (there is at most one per
    key), which starts once the one in progress ends. N callers at once cost two reads,
    not N, and none gets an answer older than its call. Used on the event loop only."""

    def __init__(self) -> None:
        self._queued: dict[Hashable, asyncio.Future[Any]] = {}
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: Hashable, read: Callable[[], Awaitable[Result]]) -> Result:
        answer = self._queued.get(key)
        if answer is None:
            answer = self._queued[key] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(key, read, answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shield: a caller that goes away does not cancel the read the others wait for
        return cast(Result, await asyncio.shield(answer))

    async def _run(
        self, key: Hashable, read: Callable[[], Awaitable[Any]], answer: asyncio.Future[Any]
    ) -> None:
        try:
            before = self._running.get(key)
            if before is not None:
                await asyncio.wait([before])
            del self._queued[key]  # started: callers from now on queue the next read
            self._running[key] = answer
            answer.set_result(await read())
        except Exception as exc:  # every caller gets it, as if it had read alone
            answer.set_exception(exc)
            answer.exception()  # retrieved: no "never retrieved" warning without callers
        except BaseException:  # cancelled (the loop is closing): so are its callers
            answer.cancel()
            raise
        finally:
            if self._queued.get(key) is answer:
                del self._queued[key]
            if self._running.get(key) is answer:
                del self._running[key]


async def _rendered(render: Callable[[Sequence[Any]], Rendered], rows: Sequence[Any]) -> Rendered:
    return render(rows) if len(rows) <= LOOP_ROWS else await run_sync(render, rows)


def _check_stats_range(bucket: str, since: datetime | None, until: datetime | None) -> None:
    if bucket not in BUCKET_SECONDS:
        raise InvalidRequest(f"bucket must be one of {', '.join(BUCKET_SECONDS)}", field="bucket")
    if since is not None and until is not None and since > until:
        raise InvalidRequest("since must not be after until", field="since")
    span = (until - since).total_seconds() if since and until else 0.0
    if span / BUCKET_SECONDS[bucket] > MAX_BUCKETS:
        raise _too_many_buckets(bucket)


def _fits(buckets: list[Bucket], bucket: str) -> list[Bucket]:
    if len(buckets) > MAX_BUCKETS:
        raise _too_many_buckets(bucket)
    return buckets


def _too_many_buckets(bucket: str) -> InvalidRequest:
    return InvalidRequest(
        f"the range spans more than {MAX_BUCKETS} {bucket} buckets; "
        "narrow since/until or pick a larger bucket",
        field="bucket",
    )


# Dead letters a filtered listing walks per request, and a summary counts at most.
LETTER_SCAN = 10_000
SUMMARY_SCAN = 100_000


def reason_name(reason: str) -> str:
    """A dead letter's reason without its detail: ``max_attempts: …`` → ``max_attempts``."""
    return reason.split(":", 1)[0].strip()


def _weight(letters: Sequence[DeadLetter]) -> int:
    return sum(letter_bytes(d.body, d.attributes) for d in letters)


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters: of a topic (by name), with a reason (its name, without the
    detail), set aside in ``[since, until)``; each None matches every letter."""

    topic: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return self.topic is None and self.reason is None and not (self.since or self.until)

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.topic is None or letter.topic == self.topic)
            and (self.reason is None or reason_name(letter.reason) == self.reason)
            and (self.since is None or letter.dead_lettered_at >= self.since)
            and (self.until is None or letter.dead_lettered_at < self.until)
        )


@dataclass(frozen=True, slots=True)
class LetterPage:
    """Dead letters and the cursor to go on from (None: nothing more to walk)."""

    items: list[DeadLetter]
    next_cursor: str | None


@dataclass
class LetterSummary:
    """Dead letters counted by reason and by topic; ``complete`` False when the count
    stopped at ``SUMMARY_SCAN`` letters."""

    total: int = 0
    scanned: int = 0
    complete: bool = False
    by_reason: dict[str, int] = field(default_factory=dict)
    by_topic: dict[str, int] = field(default_factory=dict)

    def add(self, letter: DeadLetter) -> None:
        self.total += 1
        name = reason_name(letter.reason)
        self.by_reason[name] = self.by_reason.get(name, 0) + 1
        self.by_topic[letter.topic] = self.by_topic.get(letter.topic, 0) + 1


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
    # How the stats are read where the store has a reader of its own
    # (``bootstrap.stats_reader``); None: from ``store`` in a thread.
    stats: StatsReader | None = None
    # Store calls the API makes from threads (``in_store_thread``) wait for one of these:
    # as many as the store's pool keeps connections (``bootstrap.store_limiter``). More
    # at once would open and close a connection per call; None: the default thread pool.
    store_limiter: CapacityLimiter | None = None
    # Topic names last read, so publishing goes on (into the broker) while the store is down.
    known_topics: dict[int, str] = field(default_factory=dict, repr=False)
    # How long a readiness answer is reused: probes and anyone else calling /readyz (it is
    # public) cost the dependencies one check per process per interval at most.
    readiness_ttl: float = 1.0
    # Bytes of stats answers kept per stats version (``StatsCache``); 0 keeps none.
    stats_cache_bytes: int = 16 * 1024 * 1024
    _readiness: tuple[float, dict[str, str | None]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.contracts = Contracts(self.store)
        # The worker's ingest, for messages that reach the API (Pub/Sub push).
        self.ingest = Ingest(self.store, self.max_message_bytes, self.contracts)
        self.page_reader: PageReader = self.pages or RenderedPages(self.store)
        self._stats_cache = StatsCache(self.stats_cache_bytes)
        self._versions = FreshReads()

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

    def set_retention(self, *, topic_id: int, seconds: int | None) -> Topic:
        """Keep the topic's messages ``seconds`` after publication (None: forever); the
        workers delete what is older within ``LATAM_RETENTION_INTERVAL_SECONDS``."""
        return self.store.set_retention(topic_id, validate_retention(seconds))

    def expire_now(self) -> int:
        """One retention pass over every topic now (``latam retention``)."""
        return Retention(self.store).run_once()

    def delete_topic(self, *, topic_id: int) -> None:
        self.store.delete_topic(topic_id)

    # -- messages ---------------------------------------------------------------------
    def publish(
        self,
        *,
        topic_id: int,
        items: Sequence[PublishItem],
        traceparent: str | None = None,
        batch: bool = True,
    ) -> list[str]:
        """Validate and hand the messages to the broker; returns once they are durable.

        Data that fails the topic's schema refuses the whole request (``SchemaViolation``,
        its errors at pointers into the request body: ``/messages/3/data/…`` for a
        ``batch``, ``/data/…`` for one message)."""
        topic_name = self._topic_name(topic_id)
        version = self._check_schema(topic_id, items, batch=batch)
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
                schema_version=version,
            )
            for item in items
        ]
        self.broker.publish(outbound)
        metrics.MESSAGES_PUBLISHED.labels(topic=topic_name).inc(len(outbound))
        return [message.message_id for message in outbound]

    def _check_schema(
        self, topic_id: int, items: Sequence[PublishItem], *, batch: bool
    ) -> int | None:
        """The schema version the items meet: 0 when the topic enforces none, None when
        that is unknown (the store is down and it was never read: ingest checks them)."""
        try:
            checked = self.contracts.check(
                topic_id,
                [item.data for item in items],
                (lambda i: f"/messages/{i}/data") if batch else (lambda _: "/data"),
            )
        except StoreUnavailable:
            return None
        if checked.failing:
            shown = len(checked.violations)
            raise SchemaViolation(
                f"{checked.failing} of {len(items)} message(s) fail the topic's schema"
                f" (version {checked.version}); nothing was published"
                + (f"; the first {shown} errors are listed" if shown == MAX_VIOLATIONS else ""),
                errors=[v.as_json() for v in checked.violations],
                version=checked.version or 0,
            )
        return checked.version or 0

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
        filters: Filters = NO_FILTERS,
    ) -> MessagePage:
        """A page of at most ``limit`` rows that pass ``filters`` and ``max_page_bytes``
        (or ``max_bytes``, when lower) of data and attributes."""
        after = _page_start(topic_id, cursor, since, until, filters)
        items, more = self.store.page_messages(
            topic_id,
            limit=limit,
            max_bytes=min(max_bytes or self.max_page_bytes, self.max_page_bytes),
            after_seq=after.seq,
            after_time=after.published_at,
            since=since,
            until=until,
            filters=filters,
        )
        if not items:
            self.store.get_topic(topic_id)  # an empty page of a missing topic is a 404
        last = cursor
        if items:
            last = _cursor(topic_id, items[-1].seq, items[-1].published_at, since, until, filters)
        return MessagePage(items, last if more else None, last)

    def tail_cursor(self, *, topic_id: int, filters: Filters = NO_FILTERS) -> str:
        """The cursor after the topic's newest stored message: a page read from it holds
        only what is stored next (a live tail), in ingest order, with no gap or repeat;
        bound to ``filters`` when given."""
        self.store.get_topic(topic_id)
        return Position(self.store.last_seq(topic_id), filters=filters.key).encode(topic_id)

    async def read_page(
        self,
        *,
        topic_id: int,
        limit: int,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        slots: AbstractAsyncContextManager[Any] | None = None,
        filters: Filters = NO_FILTERS,
    ) -> bytes:
        """The response body of a page of messages (``{"data": [...], "next_cursor",
        "tail_cursor"}``) as the store's page reader builds it.

        A page is first read with a budget of ``SMALL_PAGE_BYTES``; one that may have
        been cut by it (fewer rows than asked, more to come) is read again with the full
        ``max_page_bytes``, as a heavy page, after waiting for one of ``slots``: heavy
        readers wait for each other, never in front of small reads.
        """
        after = _page_start(topic_id, cursor, since, until, filters)
        request = PageRequest(
            topic_id,
            limit,
            min(SMALL_PAGE_BYTES, self.max_page_bytes),
            after.seq,
            after.published_at,
            since,
            until,
            filters,
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
        tail = _cursor(topic_id, *page.last, since, until, filters) if page.last else cursor
        cursors = orjson.dumps({"next_cursor": tail if page.more else None, "tail_cursor": tail})
        parts = (b'{"data":', page.array, b",", cursors[1:])
        # One copy of the array; a heavy page's (megabytes) off the event loop.
        return await run_sync(b"".join, parts) if heavy else b"".join(parts)

    # -- data contracts ---------------------------------------------------------------
    def put_schema(self, *, topic_id: int, schema: object, compatibility: str) -> SchemaVersion:
        return self.contracts.put(topic_id, schema, compatibility)

    def current_schema(self, *, topic_id: int) -> SchemaVersion:
        return self.contracts.current(topic_id)

    def schema_versions(self, *, topic_id: int) -> list[SchemaVersion]:
        return self.store.schema_versions(topic_id)

    def schema_version(self, *, topic_id: int, version: int) -> SchemaVersion:
        return self.store.schema_version(topic_id, version)

    def drop_schema(self, *, topic_id: int) -> None:
        self.contracts.drop(topic_id)

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
        _check_stats_range(bucket, since, until)
        # One more than allowed tells an open-ended range that is too wide from one that fits.
        return _fits(
            self.store.topic_stats(
                topic_id, bucket=bucket, since=since, until=until, limit=MAX_BUCKETS + 1
            ),
            bucket,
        )

    async def read_topic_stats(
        self,
        render: Callable[[Sequence[Bucket]], Rendered],
        *,
        topic_id: int,
        bucket: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Rendered:
        """``topic_stats`` for the API, ``render``ed: read by the store's own stats reader
        where it has one (on the event loop), else by the store in a thread, which also
        renders them (a read and its body in one hop); a big answer is rendered in a
        thread either way."""
        _check_stats_range(bucket, since, until)
        key = (render, topic_id, bucket, since, until)
        version = await self._stats_version(topic_id)
        if version:  # () is no such topic: the read below says so
            kept = self._stats_cache.get(key, version)
            if kept is not None:
                return cast(Rendered, kept)
        found = None
        if self.stats is not None:
            found = await self.stats.topic_stats(
                topic_id, bucket=bucket, since=since, until=until, limit=MAX_BUCKETS + 1
            )
        if found is None:
            answer = await self.in_store_thread(
                lambda: render(
                    self.topic_stats(topic_id=topic_id, bucket=bucket, since=since, until=until)
                )
            )
        else:
            answer = await _rendered(render, _fits(found, bucket))
        if version:
            self._stats_cache.put(key, version, answer)
        return answer

    def all_stats(self) -> list[TopicTotals]:
        """Totals per topic, topics without messages included."""
        return self.store.all_stats()

    async def read_all_stats(self, render: Callable[[Sequence[TopicTotals]], Rendered]) -> Rendered:
        """``all_stats`` for the API, ``render``ed, as ``read_topic_stats`` reads."""
        key = (render, None)
        version = await self._stats_version(None)
        if version is not None:
            kept = self._stats_cache.get(key, version)
            if kept is not None:
                return cast(Rendered, kept)
        found = None if self.stats is None else await self.stats.all_stats()
        if found is None:
            answer = await self.in_store_thread(lambda: render(self.all_stats()))
        else:
            answer = await _rendered(render, found)
        if version is not None:
            self._stats_cache.put(key, version, answer)
        return answer

    async def _stats_version(self, topic_id: int | None) -> StatsVersion | None:
        """The stats version of one topic (None: of all), where answers are kept."""
        if self._stats_cache.max_bytes == 0:
            return None
        reader = self.stats
        if reader is not None:
            return await self._versions.read(topic_id, lambda: reader.stats_version(topic_id))
        return await self._versions.read(
            topic_id, lambda: self.in_store_thread(self.store.stats_version, topic_id)
        )

    # -- dead letters -----------------------------------------------------------------
    def list_dead_letters(
        self, *, limit: int, cursor: str | None = None, where: LetterFilter | None = None
    ) -> LetterPage:
        """Oldest first: ``limit`` at most, cut after ``max_page_bytes`` as pages are.

        With a filter, the broker's letters are walked from ``cursor`` and only those that
        match are kept; a request walks at most ``LETTER_SCAN`` of them, so a filter that
        matches little answers a short (even empty) page with a cursor to go on from."""
        if where is None or where.empty:
            letters = self.broker.list_dead_letters(
                limit=limit, after=cursor, max_bytes=self.max_page_bytes
            )
            full = len(letters) == limit or _weight(letters) >= self.max_page_bytes
            return LetterPage(letters, letters[-1].id if letters and full else None)
        kept: list[DeadLetter] = []
        walked, after, weight = 0, cursor, 0
        while walked < LETTER_SCAN:
            page = self.broker.list_dead_letters(
                limit=min(1000, LETTER_SCAN - walked), after=after, max_bytes=self.max_page_bytes
            )
            if not page:
                return LetterPage(kept, None)
            for letter in page:
                walked += 1
                after = letter.id
                if where.matches(letter):
                    kept.append(letter)
                    weight += _weight([letter])
                    if len(kept) == limit or weight >= self.max_page_bytes:
                        return LetterPage(kept, after)
        return LetterPage(kept, after)

    def dead_letter_summary(self, *, where: LetterFilter | None = None) -> LetterSummary:
        """Counts of dead letters by reason and by topic, over at most ``SUMMARY_SCAN``."""
        summary = LetterSummary()
        after: str | None = None
        while summary.scanned < SUMMARY_SCAN:
            page = self.broker.list_dead_letters(
                limit=1000, after=after, max_bytes=self.max_page_bytes
            )
            if not page:
                summary.complete = True
                break
            for letter in page:
                summary.scanned += 1
                if where is None or where.matches(letter):
                    summary.add(letter)
            after = page[-1].id
        return summary

    def get_dead_letter(self, *, dead_letter_id: str) -> DeadLetter:
        return self.broker.get_dead_letter(dead_letter_id)

    def replay_dead_letters(self, *, ids: Sequence[str] | None = None) -> int:
        return self.broker.replay_dead_letters(ids)

    def replay_corrected(
        self,
        *,
        dead_letter_id: str,
        data: Mapping[str, Any] | None,
        attributes: Mapping[str, str] | None,
    ) -> str:
        """Publish a dead letter again with a corrected ``data`` and/or ``attributes``
        (checked as a publish is: the topic's schema included, pointers at ``/data``),
        under its topic and message id, then delete it. Returns the message id.

        The corrected message is on the broker before the letter goes: a failure in
        between leaves both, and replaying the letter again stores nothing twice."""
        letter = self.broker.get_dead_letter(dead_letter_id)
        topic_id = self._letter_topic(letter)
        if data is None:
            try:
                data = orjson.loads(letter.body)
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                raise InvalidRequest(
                    "the dead letter's body is not a JSON object: give a corrected data",
                    field="data",
                )
        if attributes is None:
            attributes = {
                k: v for k, v in letter.attributes.items() if k not in RESERVED_ATTRIBUTES
            }
        item = PublishItem(data=data, attributes=attributes, id=letter.message_id or None)
        version = self._check_schema(topic_id, [item], batch=False)
        message = OutboundMessage(
            topic=self._topic_name(topic_id),
            topic_id=topic_id,
            message_id=validate_message_id(item.id) if item.id else new_message_id(),
            body=encode_data(data, max_bytes=self.max_message_bytes),
            attributes=validate_attributes(attributes),
            published_at=letter.published_at,
            schema_version=version,
        )
        self.broker.publish([message])
        self.broker.purge_dead_letters([dead_letter_id])
        return message.message_id

    def _letter_topic(self, letter: DeadLetter) -> int:
        """The id of the topic a dead letter was for; Conflict when it does not exist."""
        raw_id = letter.attributes.get(ATTR_TOPIC_ID, "")
        if raw_id.isascii() and raw_id.isdigit():
            try:
                return self.store.get_topic(int(raw_id)).id
            except NotFound:
                pass
        found = self.store.topic_ids([letter.topic]) if letter.topic else {}
        if letter.topic not in found:
            raise Conflict(
                f"the dead letter's topic {letter.topic[:200]!r} does not exist;"
                " create it, then replay"
            )
        return found[letter.topic]

    def purge_dead_letters(self, *, ids: Sequence[str] | None = None) -> int:
        return self.broker.purge_dead_letters(ids)

    def backlog(self) -> Backlog | None:
        """Messages waiting for the worker and the oldest one's age, or None where the
        broker cannot tell (Pub/Sub: its subscription's own metrics know)."""
        return self.broker.backlog()

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

    # -- live tail --------------------------------------------------------------------
    def stream_start(
        self,
        *,
        topic_id: int,
        cursor: str | None = None,
        from_start: bool = False,
        filters: Filters = NO_FILTERS,
    ) -> int:
        """The ``seq`` a live tail of the topic starts after: ``cursor`` (of a page or
        an event in ingest order, with the same filters), else 0 ``from_start``, else the
        newest stored message (only what is stored next). NotFound for a missing topic."""
        self.store.get_topic(topic_id)
        if cursor:
            return _page_start(topic_id, cursor, None, None, filters).seq
        return 0 if from_start else self.store.last_seq(topic_id)

    # -- aggregations -----------------------------------------------------------------
    def aggregate(self, *, topic_id: int, query: AggregateQuery) -> list[AggregateRow]:
        """The rows of ``query`` in bucket, then group order, computed by the store; past
        ``aggregates.MAX_ROWS`` rows (one more is asked for, to tell) InvalidQuery."""
        rows = self.store.aggregate(topic_id, query, limit=MAX_AGGREGATE_ROWS + 1)
        if len(rows) > MAX_AGGREGATE_ROWS:
            raise too_many_rows(query)
        return in_order(rows)


def _page_start(
    topic_id: int,
    cursor: str | None,
    since: datetime | None,
    until: datetime | None,
    filters: Filters = NO_FILTERS,
) -> Position:
    """Where a page starts, once the cursor and time window are checked: a cursor of a
    page with a time window continues only such a page, and one without only one without
    (the two walk different orders, see ``domain.Position``); a cursor of a filtered
    page continues only a page of the same filters."""
    if since is not None and until is not None and since > until:
        raise InvalidRequest("since must not be after until", field="since")
    if not cursor:
        return Position()
    position = decode_position(cursor, topic_id=topic_id)
    if position.filters != filters.key:
        raise InvalidQuery(
            "this cursor is from a page with other filters; pass the same filters again"
            " (a page with new filters starts without a cursor)",
            field="cursor",
        )
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
    filters: Filters = NO_FILTERS,
) -> str:
    """The cursor after a row, in the order its page walked, bound to its filters."""
    windowed = since is not None or until is not None
    return Position(seq, published_at if windowed else None, filters.key).encode(topic_id)
