"""The store's tables, in SQLAlchemy Core. Alembic migrations mirror this module."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC with microseconds on every dialect, read back aware.

    SQLite and MySQL keep naive values, so the value is normalised to naive UTC on the
    way in and tagged UTC on the way out; PostgreSQL uses ``timestamptz``.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=dialect.name == "postgresql"))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)


@functools.lru_cache(maxsize=4096)
def _as_utc(value: datetime) -> datetime:
    """Tag or convert to UTC; cached because a page's rows share a few batch timestamps."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Message bodies up to the configurable limit (256 KiB by default): MySQL's TEXT stops at 64 KiB.
JsonText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere sequences are 64-bit.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Binary collation on MySQL keeps names and ids case-sensitive, as on the other stores.
TABLE_OPTIONS: dict[str, Any] = {
    "sqlite_autoincrement": True,
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

topics = Table(
    "topics",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The data contract enforced on the topic: a version in ``topic_schemas``, or None.
    Column("schema_version", Integer, nullable=True),
    # Messages published longer ago than this many seconds are deleted; None keeps them.
    Column("retention_seconds", BigInteger, nullable=True),
    # Goes up in every transaction that changes the topic's rollups or its name: a stats
    # answer read at one value holds for as long as it stays (``service.StatsCache``).
    Column("stats_version", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("name"),
    **TABLE_OPTIONS,
)

messages = Table(
    "messages",
    metadata,
    # Ingest order: keyset paging walks (topic_id, seq).
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("topic_id", BigId, ForeignKey("topics.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", String(128), nullable=False),
    # The JSON object as compact text, spliced into responses without re-encoding.
    Column("data", JsonText, nullable=False),
    Column("attributes", JsonText, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("published_at", UTCDateTime(), nullable=False),
    Column("ingested_at", UTCDateTime(), nullable=False),
    # The topic's schema version the data was validated against; None: no contract.
    Column("schema_version", Integer, nullable=True),
    UniqueConstraint("topic_id", "message_id"),
    Index(None, "topic_id", "seq"),
    # Time-window pages walk (published_at, seq) from any position; stats group by time.
    Index(None, "topic_id", "published_at", "seq"),
    **TABLE_OPTIONS,
)

# What the stats endpoints read instead of scanning ``messages``: per topic and per bucket
# of publish time (a minute, an hour and a day wide), the rows stored in it. Written in the
# transaction that inserts those rows (storage/rollups.py), so it counts each row once.
rollups = Table(
    "rollups",
    metadata,
    Column(
        "topic_id",
        BigId,
        ForeignKey("topics.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("width", Integer, primary_key=True, autoincrement=False),  # seconds: 60, 3600, 86400
    # The bucket's start, whole seconds since 1970-01-01 UTC (floored for earlier times).
    Column("bucket_start", BigInteger, primary_key=True, autoincrement=False),
    Column("message_count", BigInteger, nullable=False),
    Column("byte_count", BigInteger, nullable=False),
    # First and last publish time in the bucket, microseconds since 1970-01-01 UTC.
    Column("first_published", BigInteger, nullable=False),
    Column("last_published", BigInteger, nullable=False),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# The build of ``rollups`` for rows stored before they existed: rows up to ``horizon_seq``
# (the last one when the table was created) are added in batches, ``built_to_seq`` marks
# how far. Stats read the rollups once ``built_to_seq`` reaches ``horizon_seq``.
rollup_build = Table(
    "rollup_build",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("horizon_seq", BigInteger, nullable=False),
    Column("built_to_seq", BigInteger, nullable=False),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# Data contracts: every JSON Schema a topic has had, by version (1, 2, …); never changed
# once written, so a stored message's ``schema_version`` always names the schema it met.
topic_schemas = Table(
    "topic_schemas",
    metadata,
    Column(
        "topic_id",
        BigId,
        ForeignKey("topics.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("schema", JsonText, nullable=False),  # the JSON Schema as compact text
    Column("compatibility", String(16), nullable=False),  # backward | none
    Column("created_at", UTCDateTime(), nullable=False),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# API keys: only a SHA-256 of the secret is kept; ``key_id`` is the public half used to
# find the row, so a lookup never compares secrets in SQL.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key_id", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("scopes", String(100), nullable=False),
    Column("topics", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    UniqueConstraint("key_id"),
    **TABLE_OPTIONS,
)
