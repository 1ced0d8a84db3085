"""Streaming export of a topic's messages as NDJSON, CSV or Parquet.

An export walks the whole range (a time window and field filters, as reads take them)
in batches read with ``Store.page_messages`` by keyset (after the last row of the batch
before), so its memory is one batch, or one Parquet row group, whatever the range; each
batch is read and encoded in a worker thread, and the next one is read only once the
bytes of the one before have been handed on (to a client that reads slower, the export
waits). See ``fields`` for what it writes and ``parquet`` for the Parquet types.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from anyio import CapacityLimiter
from anyio.to_thread import run_sync

from latam.errors import InvalidQuery
from latam.export.fields import Column
from latam.export.writers import CsvWriter, NdjsonWriter, Writer
from latam.filters import NO_FILTERS, Filters
from latam.storage.port import Store

Format = Literal["ndjson", "csv", "parquet"]
MEDIA_TYPES: dict[Format, str] = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
BATCH_ROWS = 1000


def parse_format(text: str) -> Format:
    """``ndjson``, ``csv`` or ``parquet``; InvalidQuery (400) otherwise."""
    for name in MEDIA_TYPES:
        if text == name:
            return name
    raise InvalidQuery(
        f"format is one of {', '.join(MEDIA_TYPES)}, not {text[:40]!r}", field="format"
    )


def make_writer(fmt: Format, columns: tuple[Column, ...], *, all_fields: bool) -> Writer:
    """The writer of ``fmt``; NDJSON writes whole messages unless fields were named."""
    if fmt == "ndjson":
        return NdjsonWriter(None if all_fields else columns)
    if fmt == "csv":
        return CsvWriter(columns)
    from latam.export.parquet import ParquetWriter  # pyarrow: loaded by Parquet exports only

    return ParquetWriter(columns)


@dataclass(frozen=True, slots=True)
class ExportRange:
    """Which messages: those of ``topic_id`` within ``since``/``until`` (publish-time
    order when either is given, else ingest order, as reads) that pass ``filters``."""

    topic_id: int
    since: datetime | None = None
    until: datetime | None = None
    filters: Filters = NO_FILTERS
    batch_rows: int = BATCH_ROWS
    batch_bytes: int = 4 * 1024 * 1024


class Export:
    """One export in progress: ``next_chunk`` reads the next batch and encodes it."""

    def __init__(self, store: Store, where: ExportRange, writer: Writer) -> None:
        self.store, self.where, self.writer = store, where, writer
        self._after_seq = 0
        self._after_time: datetime | None = None
        self._more = True
        self.done = False

    @property
    def rows(self) -> int:
        return self.writer.rows

    def next_chunk(self) -> bytes | None:
        """The bytes of the next batch (the end of the file after the last one); None
        once everything was returned. Blocking: call it from a worker thread."""
        if self.done:
            return None
        if not self._more:
            # A topic deleted under the export reads as its end: NotFound instead, so
            # that the file is cut short rather than complete-looking and missing rows.
            self.store.get_topic(self.where.topic_id)
            self.done = True
            return self.writer.close()
        where = self.where
        batch, self._more = self.store.page_messages(
            where.topic_id,
            limit=where.batch_rows,
            max_bytes=where.batch_bytes,
            after_seq=self._after_seq,
            after_time=self._after_time,
            since=where.since,
            until=where.until,
            filters=where.filters,
        )
        if batch:
            self._after_seq = batch[-1].seq
            windowed = where.since is not None or where.until is not None
            self._after_time = batch[-1].published_at if windowed else None
        else:
            self._more = False
        return self.writer.write(batch)


async def chunks(export: Export, limiter: CapacityLimiter | None = None) -> AsyncIterator[bytes]:
    """The export's bytes, each batch read in a worker thread (behind ``limiter``); a
    consumer that stops iterating stops the export after the batch in hand."""
    step: Any = functools.partial(export.next_chunk)
    while (chunk := await run_sync(step, limiter=limiter)) is not None:
        if chunk:
            yield chunk
