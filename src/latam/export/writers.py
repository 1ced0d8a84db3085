"""Export formats as text: NDJSON (one message per line) and CSV (RFC 4180).

A writer turns batches of stored messages into bytes to send, keeping nothing between
batches; ``close`` gives what ends the file (nothing, for these two).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Protocol

import orjson

from latam.export.fields import Column, as_json, as_text, row_values
from latam.storage.port import StoredMessage, message_json


class Writer(Protocol):
    """Encodes an export batch by batch; ``rows`` counts the messages written."""

    rows: int

    def write(self, batch: Sequence[StoredMessage]) -> bytes: ...
    def close(self) -> bytes: ...


class NdjsonWriter:
    """One JSON object per line: each message exactly as reads return it, or, with
    ``columns``, an object of those fields (a missing one is null)."""

    def __init__(self, columns: tuple[Column, ...] | None = None) -> None:
        self.columns = columns
        self.rows = 0

    def write(self, batch: Sequence[StoredMessage]) -> bytes:
        self.rows += len(batch)
        if self.columns is None:
            lines = [orjson.dumps(message_json(m)) for m in batch]
        else:
            names = [column.name for column in self.columns]
            lines = [
                orjson.dumps(
                    dict(zip(names, map(as_json, row_values(m, self.columns)), strict=True))
                )
                for m in batch
            ]
        lines.append(b"")
        return b"\n".join(lines) if batch else b""

    def close(self) -> bytes:
        return b""


class CsvWriter:
    """A header row of the field names, then a row per message: strings as they are,
    nested values as compact JSON text, null and missing fields empty. RFC 4180 quoting
    and CRLF line ends (the csv module's defaults), UTF-8 without a byte order mark."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        self.rows = 0
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer)
        self._csv.writerow([column.name for column in columns])

    def write(self, batch: Sequence[StoredMessage]) -> bytes:
        self.rows += len(batch)
        columns = self.columns
        self._csv.writerows([as_text(v) for v in row_values(m, columns)] for m in batch)
        return self._take()

    def close(self) -> bytes:
        return self._take()

    def _take(self) -> bytes:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()
