"""The store port: what the service, the worker and the API need from any store, and
the values it returns. ``SqlStore`` (``storage.repository``) is the adapter on every
SQL database; every adapter passes tests/contract/test_store.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from latam.domain import NewMessage, Topic


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as read back: ``data`` and ``attributes`` are JSON text."""

    seq: int
    message_id: str
    data: str
    attributes: str
    published_at: datetime
    ingested_at: datetime


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch write did, per topic name."""

    stored: dict[str, int]
    duplicates: dict[str, int]
    stored_published_at: list[datetime]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Messages published in ``[start, start + bucket width)``."""

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
    ) -> tuple[list[StoredMessage], bool]:
        """Up to ``limit`` rows of ``list_messages``, stopping after the row that brings
        their ``data`` and ``attributes`` to ``max_bytes`` (so at least one), and whether
        more rows follow."""
        ...

    def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket]: ...
    def all_stats(self) -> list[TopicTotals]: ...
    def close(self) -> None: ...


class PageReader(Protocol):
    """A faster path for pages of messages, rendered by the store as a JSON array."""

    def page(
        self,
        topic_id: int,
        *,
        limit: int,
        after_seq: int,
        since: datetime | None = None,
        until: datetime | None = None,
        after_time: datetime | None = None,
        max_bytes: int | None = None,
    ) -> tuple[bytes, tuple[int, datetime] | None, bool, int]:
        """The page as JSON (in ``Store.list_messages``'s order), the seq and publish
        time of the last row shown (None when empty), whether more follow, and how many
        rows it holds."""
        ...
