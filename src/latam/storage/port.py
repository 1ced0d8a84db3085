"""The store port: what the service, the worker and the API need from any store, and
the values it returns. ``SqlStore`` (``storage.repository``) is the adapter on every
SQL database; every adapter passes tests/contract/test_store.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from anyio.to_thread import run_sync

from latam.aggregates import AggregateQuery, AggregateRow
from latam.domain import NewMessage, Topic, isoformat
from latam.errors import NotFound
from latam.filters import NO_FILTERS, Filters


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as read back: ``data`` and ``attributes`` are JSON text."""

    seq: int
    message_id: str
    data: str
    attributes: str
    published_at: datetime
    ingested_at: datetime
    # The topic's schema version ``data`` was validated against; None: no schema.
    schema_version: int | None


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of a topic's data contract: the JSON Schema as compact text, and
    whether it is the one the topic enforces now."""

    topic_id: int
    version: int
    schema: str
    compatibility: str
    created_at: datetime
    current: bool


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch write did, per topic name."""

    stored: dict[str, int]
    duplicates: dict[str, int]
    stored_published_at: list[datetime]


@dataclass(slots=True)
class Bucket:
    """Messages published in ``[start, start + bucket width)``. Not frozen: a month of
    hourly buckets builds 720 of them per request, and a frozen dataclass costs three
    times as much to build (0.55 against 0.18 ms)."""

    start: datetime
    count: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TopicTotals:
    """Totals of one topic; the timestamps are None while it has no messages."""

    topic_id: int
    topic: str
    count: int
    bytes: int
    first_published_at: datetime | None
    last_published_at: datetime | None


class Store(Protocol):
    """What the service needs from a store."""

    def ping(self) -> None: ...
    def create_topic(self, name: str) -> Topic: ...
    def get_topic(self, topic_id: int) -> Topic: ...
    def topic_ids(self, names: Sequence[str]) -> dict[str, int]: ...
    def topic_names(self, ids: Sequence[int]) -> dict[int, str]: ...
    def list_topics(self, *, limit: int, after_id: int = 0) -> list[Topic]: ...
    def rename_topic(self, topic_id: int, name: str) -> Topic: ...
    def delete_topic(self, topic_id: int) -> None: ...
    def write_messages(self, batch: Sequence[tuple[int, NewMessage]]) -> WriteResult: ...
    def list_messages(
        self,
        topic_id: int,
        *,
        limit: int,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        after_time: datetime | None = None,
    ) -> list[StoredMessage]:
        """Ingest order; with ``since``/``until``, publish-time order (``domain.Position``)."""
        ...

    def page_messages(
        self,
        topic_id: int,
        *,
        limit: int,
        max_bytes: int,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        after_time: datetime | None = None,
        filters: Filters | None = None,
    ) -> tuple[list[StoredMessage], bool]:
        """Up to ``limit`` rows of ``list_messages`` that pass ``filters``, stopping after
        the row that brings their ``data`` and ``attributes`` to ``max_bytes`` (so at least
        one), and whether more rows follow. A filtered read is bounded by the statement
        timeout (QueryTooExpensive)."""
        ...

    def last_seq(self, topic_id: int) -> int:
        """The ``seq`` of the topic's newest stored message (ingest order), 0 when it has
        none: where a live reader starts to see only what arrives next."""
        ...

    def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket]:
        """Non-empty buckets in time order, at most ``limit``; NotFound for no topic."""
        ...

    def aggregate(self, topic_id: int, query: AggregateQuery, *, limit: int) -> list[AggregateRow]:
        """Up to ``limit`` rows of ``query`` over the topic, in no particular order, computed
        by the database (``latam.aggregates`` says how); NotFound for no topic,
        QueryTooExpensive past the statement timeout."""
        ...

    def all_stats(self) -> list[TopicTotals]: ...
    def stats_version(self, topic_id: int | None) -> StatsVersion | None:
        """What the stats of one topic (None: of every topic) depend on, which changes
        whenever they may; None while the rollups do not hold every row yet."""
        ...

    def set_retention(self, topic_id: int, seconds: int | None) -> Topic:
        """Keep the topic's messages ``seconds`` after publication (None: forever)."""
        ...

    def retained_topics(self) -> dict[int, int]:
        """The retention in seconds of every topic that has one."""
        ...

    def expire(self, topic_id: int, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the topic's oldest messages published before
        ``before`` (its stats kept exact); how many it deleted."""
        ...

    def add_schema(
        self, topic_id: int, *, version: int, schema: str, compatibility: str
    ) -> SchemaVersion:
        """Store ``version`` (the latest plus one) and enforce it; Conflict when another
        writer added that version first, NotFound for no topic."""
        ...

    def drop_schema(self, topic_id: int) -> None:
        """Stop enforcing the topic's schema (its versions are kept); NotFound for no topic."""
        ...

    def schema_versions(self, topic_id: int) -> list[SchemaVersion]:
        """Every version of the topic's schema, oldest first; NotFound for no topic."""
        ...

    def schema_version(self, topic_id: int, version: int) -> SchemaVersion:
        """One version; NotFound when the topic or the version does not exist."""
        ...

    def enforced_schemas(self, topic_ids: Sequence[int]) -> dict[int, SchemaVersion]:
        """The schema each of these topics enforces; topics without one are left out."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class JsonPage:
    """A page of messages as a JSON array, in ``Store.list_messages``'s order.

    ``last`` is the seq and publish time of its last row (None when empty), ``more``
    whether rows follow it, ``rows`` how many it holds, and ``topic_exists`` whether the
    topic exists (read with the page, so an empty page of a missing topic is a 404).
    """

    array: bytes
    last: tuple[int, datetime] | None
    more: bool
    rows: int
    topic_exists: bool = True


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page: rows of ``topic_id`` after ``after_seq`` (and ``after_time`` in
    publish-time order), within ``since``/``until``, at most ``limit`` rows and, past the
    row that brings them there, no more than ``max_bytes`` of data and attributes."""

    topic_id: int
    limit: int
    max_bytes: int
    after_seq: int = 0
    after_time: datetime | None = None
    since: datetime | None = None
    until: datetime | None = None
    filters: Filters = NO_FILTERS

    @property
    def in_time(self) -> bool:
        return self.since is not None or self.until is not None


class PageReader(Protocol):
    """How the service reads pages of messages as JSON: every store has one
    (``bootstrap.page_reader`` picks it), and each returns the same bytes for the same
    page (tests/contract/test_page_json.py)."""

    async def page(self, request: PageRequest, *, heavy: bool, first_try: bool = False) -> JsonPage:
        """The page; ``heavy`` when it may be big (its budget is the full page budget),
        so a reader that would build it on the event loop moves it to a thread. On a
        ``first_try`` (a budget below the full one), a page cut by its budget before
        ``limit`` rows may come back without its rows (``more`` true, ``rows`` below
        ``limit``): the service reads it again as a heavy page."""
        ...

    async def aclose(self) -> None: ...


# Rows a reader on the event loop turns into buckets or totals, or a body, on the loop
# itself (a month of hourly buckets: 0.2 ms); more go to a thread.
LOOP_ROWS = 2_000


# ``(topic id, topics.stats_version)`` of one topic (empty: no such topic) or of every
# topic, in id order. Topic ids are never reused and a topic's version only goes up, so
# two equal values mean the same rollups and names.
StatsVersion = tuple[tuple[int, int], ...]
# The statements that read it; the version of one topic is a primary-key lookup.
STATS_VERSION = "SELECT id, stats_version FROM topics WHERE id = :topic"
STATS_VERSIONS = "SELECT id, stats_version FROM topics ORDER BY id"


def stats_version_of(rows: Sequence[Sequence[Any]]) -> StatsVersion:
    return tuple((int(topic_id), int(version)) for topic_id, version in rows)


async def read_stats_version(rows: Sequence[Sequence[Any]]) -> StatsVersion:
    """``stats_version_of`` for a reader on the event loop: past ``LOOP_ROWS`` topics, in
    a thread."""
    if len(rows) > LOOP_ROWS:
        return await run_sync(stats_version_of, rows)
    return stats_version_of(rows)


class StatsReader(Protocol):
    """How the service reads the stats where a store has a reader of its own (PostgreSQL
    on its async pool, ``bootstrap.stats_reader``); the same answers as ``Store``'s."""

    async def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket] | None:
        """As ``Store.topic_stats``; None when the store has to answer instead."""
        ...

    async def all_stats(self) -> list[TopicTotals] | None:
        """As ``Store.all_stats``; None when the store has to answer instead."""
        ...

    async def stats_version(self, topic_id: int | None) -> StatsVersion | None:
        """As ``Store.stats_version``."""
        ...


def message_json(message: StoredMessage) -> dict[str, Any]:
    """One stored message as every read returns it: its stored JSON spliced, not parsed.
    Page readers that build pages themselves produce exactly these bytes."""
    return {
        "id": message.message_id,
        "data": orjson.Fragment(message.data),
        "attributes": orjson.Fragment(message.attributes),
        "published_at": isoformat(message.published_at),
        "ingested_at": isoformat(message.ingested_at),
        "schema_version": message.schema_version,
    }


def render_array(items: Sequence[StoredMessage]) -> bytes:
    """Stored messages as the JSON array of a page."""
    return orjson.dumps([message_json(m) for m in items])


class RenderedPages:
    """Pages of any ``Store``, read with ``Store.page_messages`` in the thread pool and
    rendered by ``orjson``: for a store without a reader of its own."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def page(self, request: PageRequest, *, heavy: bool, first_try: bool = False) -> JsonPage:
        return await run_sync(self.read, request)

    async def aclose(self) -> None:
        return None

    def read(self, request: PageRequest) -> JsonPage:
        return read_rendered(self.store, request)


def read_rendered(store: Store, request: PageRequest) -> JsonPage:
    """The page read with ``Store.page_messages`` and rendered by ``orjson``."""
    items, more = store.page_messages(
        request.topic_id,
        limit=request.limit,
        max_bytes=request.max_bytes,
        after_seq=request.after_seq,
        after_time=request.after_time,
        since=request.since,
        until=request.until,
        filters=request.filters,
    )
    exists = True
    if not items:
        try:
            store.get_topic(request.topic_id)
        except NotFound:
            exists = False
    last = (items[-1].seq, items[-1].published_at) if items else None
    return JsonPage(render_array(items), last, more, len(items), exists)
