"""Parquet exports through pyarrow, streamed one row group at a time.

Column types are fixed by the first row group (up to ``ROW_GROUP_ROWS`` messages), since
the file's schema comes before its rows: ``published_at`` and ``ingested_at`` are
``timestamp[us, UTC]``, ``schema_version`` ``int64``, ``message_id``, ``data`` and
``attributes`` strings (JSON text for the last two). A path's type is what its values in
that first row group are: all booleans ``bool``, all integers ``int64``, numbers
``float64``, anything else (strings, objects, arrays, mixed types, or no value at all)
``string``, where a string is written as it is and any other value as its JSON text.

A value in a later row group that does not fit its column's type (a string in an
``int64`` column, a fraction in an ``int64`` one) is written as null, never guessed at:
each such column is counted in the file's key-value metadata under ``latam.nulled``
(``{"data.delay_min": 3}``), which ``latam export`` reports, and logged. A string column
never nulls anything; export as CSV or NDJSON to keep such values as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from latam.export.fields import MISSING, Column, as_text, row_values
from latam.storage.port import StoredMessage

log = logging.getLogger(__name__)


def _release_promptly() -> None:
    """Arrow's memory (only Parquet exports use it) from jemalloc, which hands freed
    pages back to the system at once (decay 0): Arrow's default, mimalloc, keeps them
    for reuse, about 11 MB more at the peak of an export. Where this build of pyarrow
    has no jemalloc, or ``ARROW_DEFAULT_MEMORY_POOL`` names a pool, Arrow's choice stays."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # pragma: no cover - a pyarrow built without jemalloc
        return
    pa.set_memory_pool(pool)


_release_promptly()

ROW_GROUP_ROWS = 4_096
# A row group is also closed past this many bytes of stored JSON, so that wide messages
# do not make it (and the memory an export holds) large.
ROW_GROUP_BYTES = 4 * 1024 * 1024
INT64 = (-(2**63), 2**63 - 1)
TIMESTAMP = pa.timestamp("us", tz="UTC")
TOP_TYPES = {"published_at": TIMESTAMP, "ingested_at": TIMESTAMP, "schema_version": pa.int64()}


def infer_type(values: Sequence[Any]) -> Any:
    """The Parquet type of a path, from its values in the first row group."""
    kinds = {_kind(v) for v in values if v is not None and v is not MISSING}
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    return pa.string()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if INT64[0] <= value <= INT64[1] else "other"
    if isinstance(value, float | Decimal):
        return "float"
    return "other"


def _fit(value: Any, kind: Any) -> tuple[Any, bool]:
    """``value`` as a cell of type ``kind``; False when it does not fit (written null)."""
    if value is None or value is MISSING:
        return None, True
    if kind == pa.string():
        return as_text(value), True
    if kind == TIMESTAMP and isinstance(value, datetime):
        return value, True
    found = _kind(value)
    if kind == pa.int64() and found == "int":
        return value, True
    if kind == pa.float64() and found in {"int", "float"}:
        return float(value), True
    if kind == pa.bool_() and found == "bool":
        return value, True
    return None, False


class _Drain:
    """The file-like sink of the Parquet writer: what it writes is taken after each row
    group and sent, so no more than one row group is ever held."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class ParquetWriter:
    """Parquet (zstd) of ``columns``, one row group per ``ROW_GROUP_ROWS`` messages."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        self.rows = 0
        self.nulled: dict[str, int] = {}
        self._pending: list[list[Any]] = [[] for _ in columns]
        self._pending_rows = self._pending_bytes = 0
        self._sink = _Drain()
        self._writer: Any = None
        self._types: list[Any] = []

    def write(self, batch: Sequence[StoredMessage]) -> bytes:
        self.rows += len(batch)
        for message in batch:
            for pending, value in zip(
                self._pending, row_values(message, self.columns), strict=True
            ):
                pending.append(value)
            self._pending_bytes += len(message.data) + len(message.attributes)
        self._pending_rows += len(batch)
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()
        return self._sink.take()

    def close(self) -> bytes:
        self._flush()
        if self._writer is None:
            self._open()
        if self.nulled:
            self._writer.add_key_value_metadata({"latam.nulled": orjson.dumps(self.nulled)})
            log.warning("parquet export wrote values of another type as null: %s", self.nulled)
        self._writer.close()
        return self._sink.take()

    def _open(self) -> None:
        self._types = [
            TOP_TYPES.get(c.name, pa.string()) if c.path is None else infer_type(values)
            for c, values in zip(self.columns, self._pending, strict=True)
        ]
        schema = pa.schema(
            [pa.field(c.name, t) for c, t in zip(self.columns, self._types, strict=True)]
        )
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        if self._writer is None:
            self._open()
        arrays = []
        for column, kind, values in zip(self.columns, self._types, self._pending, strict=True):
            cells = []
            for value in values:
                cell, fits = _fit(value, kind)
                if not fits:
                    self.nulled[column.name] = self.nulled.get(column.name, 0) + 1
                cells.append(cell)
            arrays.append(pa.array(cells, type=kind))
        table = pa.Table.from_arrays(arrays, schema=self._writer.schema)
        self._writer.write_table(table, row_group_size=self._pending_rows)
        self._pending = [[] for _ in self.columns]
        self._pending_rows = self._pending_bytes = 0
