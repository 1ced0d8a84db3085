"""Each store's physical limit: the same rows inserted by the plain driver, no latam code
in between (SQLite: sqlite3, batches of 500; PostgreSQL: psycopg COPY + INSERT … ON
CONFLICT, batches of 1,000; MySQL/MariaDB: pymysql multi-row INSERT, batches of 500)."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import payload
from latam.storage.bulk_insert import COLUMNS

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


def _floor_rows(total: int, topic_id: int) -> list[tuple[Any, ...]]:
    """Rows of ``bulk_insert.COLUMNS`` (no schema: ``schema_version`` null)."""
    now = datetime.now(UTC)
    rows = [
        (topic_id, f"floor-{i}", orjson.dumps(payload("floor", i)).decode(), "{}", 200, now, now)
        for i in range(total)
    ]
    return [(*row, None) for row in rows]


def _store_with_topic(url: str, data_dir: Path) -> int:
    """Migrate the database at ``url`` to latam's schema and create the floor's topic."""
    from latam.settings import Settings
    from latam.storage import migrate
    from latam.storage.dialects import build_engine
    from latam.storage.repository import SqlStore

    store = SqlStore(build_engine(url, Settings(data_dir=data_dir)))
    migrate.upgrade(store.engine)
    topic_id = store.create_topic("floor").id
    store.close()
    return topic_id


def postgres_floor_rate(url: str, data_dir: Path, total: int, *, batch: int = 1000) -> float:
    """Rows/s into latam's own ``messages`` table on PostgreSQL with plain psycopg: COPY
    each batch into a temporary table, then ``INSERT … SELECT … ON CONFLICT DO NOTHING``,
    commit."""
    import psycopg
    from sqlalchemy.engine import make_url

    topic_id = _store_with_topic(url, data_dir)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = _floor_rows(total, topic_id)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for start in range(0, total, batch):
            conn.execute(
                "CREATE TEMP TABLE floor_batch (LIKE messages INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            with conn.cursor().copy(f"COPY floor_batch ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows[start : start + batch]:
                    copy.write_row(row)
            conn.execute(
                f"INSERT INTO messages ({', '.join(COLUMNS)})"
                f" SELECT {', '.join(COLUMNS)} FROM floor_batch ON CONFLICT DO NOTHING"
            )
            conn.commit()
        elapsed = time.perf_counter() - started
    return total / elapsed


def mysql_floor_rate(url: str, data_dir: Path, total: int, *, batch: int = 500) -> float:
    """Rows/s into latam's own ``messages`` table on MySQL/MariaDB with plain pymysql:
    ``executemany`` of a multi-row ``INSERT … ON DUPLICATE KEY UPDATE seq = seq``, one
    commit per batch."""
    import pymysql
    from sqlalchemy.engine import make_url

    topic_id = _store_with_topic(url, data_dir)
    parsed = make_url(url)
    rows = [
        (*row[:5], row[5].replace(tzinfo=None), row[6].replace(tzinfo=None), *row[7:])
        for row in _floor_rows(total, topic_id)
    ]
    conn = pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
    )
    sql = (
        f"INSERT INTO messages ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
        " ON DUPLICATE KEY UPDATE seq = seq"
    )
    try:
        started = time.perf_counter()
        with conn.cursor() as cursor:
            for start in range(0, total, batch):
                cursor.executemany(sql, rows[start : start + batch])
                conn.commit()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return total / elapsed
