"""The store's physical limit: raw sqlite3 inserts of the same rows, batches of 500."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.common import payload

SCHEMA = """
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic_id INTEGER NOT NULL,
    message_id VARCHAR(128) NOT NULL, data TEXT NOT NULL, attributes TEXT NOT NULL,
    size_bytes INTEGER NOT NULL, published_at DATETIME NOT NULL, ingested_at DATETIME NOT NULL,
    UNIQUE (topic_id, message_id));
CREATE INDEX ix_seq ON messages (topic_id, seq);
CREATE INDEX ix_pub ON messages (topic_id, published_at);
"""


def floor_rate(total: int, *, batch: int = 500, synchronous: str = "FULL") -> float:
    """Rows/s inserting ``total`` rows in committed batches, same schema and durability."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.executescript(SCHEMA)
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        rows = [
            (1, f"floor-{i}", orjson.dumps(payload("floor", i)).decode(), "{}", 200, now, now)
            for i in range(total)
        ]
        started = time.perf_counter()
        for start in range(0, total, batch):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO messages (topic_id, message_id, data, attributes, size_bytes,"
                " published_at, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows[start : start + batch],
            )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
    return total / elapsed
