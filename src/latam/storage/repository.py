"""The store's SQL adapter (SQLite, PostgreSQL, MySQL/MariaDB); the port is ``storage.port``."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    TextClause,
    delete,
    func,
    literal_column,
    select,
    text,
    update,
)

from latam import metrics
from latam.aggregates import AggregateQuery, AggregateRow
from latam.domain import NewMessage, Position, Topic, utcnow, window_start
from latam.errors import NotFound, SchemaNotCurrent, StoreUnavailable, TransientError
from latam.filters import Filters
from latam.storage import field_index, rollups
from latam.storage.aggregate import aggregate_rows
from latam.storage.bulk_insert import BulkInsert, insert_returning, returns_inserted
from latam.storage.dialects import (
    SEQ_INDEX,
    TIME_INDEX,
    by_seq,
    driver_rows,
    in_ingest_order,
    in_time_order,
    one_topic,
    pool_usage,
    through,
    translate_errors,
    within_bytes,
)
from latam.storage.filter_sql import conditions
from latam.storage.migrate import current_revision, describe, schema_problem
from latam.storage.port import (
    STATS_VERSION,
    STATS_VERSIONS,
    Bucket,
    SchemaVersion,
    StatsVersion,
    StoredMessage,
    TopicTotals,
    WriteResult,
    stats_version_of,
)
from latam.storage.schema import messages, topic_schemas, topics
from latam.storage.schema import rollups as rollups_table
from latam.storage.stats import all_totals, topic_buckets
from latam.storage.timeouts import statement_timeout

# A stored message's columns, in ``StoredMessage`` order.
PAGE_COLUMNS = (
    messages.c.seq,
    messages.c.message_id,
    messages.c.data,
    messages.c.attributes,
    messages.c.published_at,
    messages.c.ingested_at,
    messages.c.schema_version,
)
log = logging.getLogger("latam")

TOPIC_COLUMNS = (
    topics.c.id,
    topics.c.name,
    topics.c.created_at,
    topics.c.updated_at,
    topics.c.retention_seconds,
)


def _topic(row: Any) -> Topic:
    return Topic(row.id, row.name, row.created_at, row.updated_at, row.retention_seconds)


def _take_turns(conn: Connection, topic_ids: list[int]) -> None:
    """Writers of a topic take turns until commit, in topic-id order (no deadlocks).

    ``seq`` is allocated at INSERT and becomes visible at COMMIT. Were two writers of a
    topic to overlap, the later INSERT could commit first, a reader would page past it,
    and the earlier one's rows, committed afterwards with lower seqs, would never be
    seen by that reader. Holding the topic rows' lock from before the INSERT to the
    COMMIT makes commit order equal seq order per topic. SQLite needs nothing: its
    single writer holds the database lock for the whole transaction.
    """
    if conn.dialect.name != "sqlite":
        lock = select(topics.c.id).where(topics.c.id.in_(topic_ids)).order_by(topics.c.id)
        conn.execute(lock.with_for_update()).all()


class SqlStore:
    """The store on any SQLAlchemy database latam supports."""

    def __init__(self, engine: Engine, *, query_timeout: float = 10.0) -> None:
        self.engine = engine
        # Seconds an expensive read (filters, aggregations, exports) may run.
        self.query_timeout = query_timeout
        metrics.watch_pool(self)  # read at scrape time: nothing on the query path
        # One-statement reads on PostgreSQL run in autocommit: no BEGIN before them and no
        # ROLLBACK when the connection goes back to the pool, two round trips of four.
        # (On MySQL switching autocommit is itself a round trip; SQLite has none to save.)
        self._reads = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self._insert = BulkInsert()
        self._rollups_complete = False

    def pool_usage(self) -> tuple[int, int, int, int] | None:
        """(in use, idle, waiting, limit) connections of the pool, for the metrics."""
        return pool_usage(self.engine)

    def _errors(self, *, conflict: str | None = None) -> AbstractContextManager[None]:
        """Driver errors as latam's; a missing table says which revision the schema is at."""
        return translate_errors(conflict=conflict, schema=lambda: schema_problem(self.engine))

    def ping(self) -> None:
        """The store answers and its schema is the one this code expects."""
        with self._errors(), self.engine.connect() as conn:
            revision = current_revision(conn)
        if (problem := describe(revision)) is not None:
            raise SchemaNotCurrent(problem)

    def create_topic(self, name: str) -> Topic:
        now = utcnow()
        conflict = self._errors(conflict=f"topic {name!r} already exists")
        with conflict, self.engine.begin() as conn:
            result = conn.execute(topics.insert().values(name=name, created_at=now, updated_at=now))
            topic_id = result.inserted_primary_key[0] if result.inserted_primary_key else 0
        return Topic(id=int(topic_id), name=name, created_at=now, updated_at=now)

    def get_topic(self, topic_id: int) -> Topic:
        with self._errors(), self._reads.connect() as conn:
            row = conn.execute(select(*TOPIC_COLUMNS).where(topics.c.id == topic_id)).first()
        if row is None:
            raise NotFound(f"topic {topic_id} does not exist")
        return _topic(row)

    def topic_ids(self, names: Sequence[str]) -> dict[str, int]:
        if not names:
            return {}
        query = select(topics.c.name, topics.c.id).where(topics.c.name.in_(set(names)))
        with self._errors(), self.engine.connect() as conn:
            return {row.name: row.id for row in conn.execute(query)}

    def topic_names(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        query = select(topics.c.id, topics.c.name).where(topics.c.id.in_(set(ids)))
        with self._errors(), self.engine.connect() as conn:
            return {row.id: row.name for row in conn.execute(query)}

    def list_topics(self, *, limit: int, after_id: int = 0) -> list[Topic]:
        query = (
            select(*TOPIC_COLUMNS).where(topics.c.id > after_id).order_by(topics.c.id).limit(limit)
        )
        with self._errors(), self._reads.connect() as conn:
            return [_topic(row) for row in conn.execute(query)]

    def rename_topic(self, topic_id: int, name: str) -> Topic:
        now = utcnow()
        stmt = (
            update(topics)
            .where(topics.c.id == topic_id)
            .values(name=name, updated_at=now, stats_version=topics.c.stats_version + 1)
        )
        conflict = self._errors(conflict=f"topic {name!r} already exists")
        with conflict, self.engine.begin() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(f"topic {topic_id} does not exist")
        return self.get_topic(topic_id)

    def set_retention(self, topic_id: int, seconds: int | None) -> Topic:
        now = utcnow()
        stmt = (
            update(topics)
            .where(topics.c.id == topic_id)
            .values(retention_seconds=seconds, updated_at=now)
        )
        with self._errors(), self.engine.begin() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(f"topic {topic_id} does not exist")
        return self.get_topic(topic_id)

    def retained_topics(self) -> dict[int, int]:
        query = select(topics.c.id, topics.c.retention_seconds).where(
            topics.c.retention_seconds.is_not(None)
        )
        with self._errors(), self._reads.connect() as conn:
            return {row.id: int(row.retention_seconds) for row in conn.execute(query)}

    def expire(self, topic_id: int, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the topic's oldest messages published before
        ``before``, their rollups kept exact, in one transaction; how many it deleted."""
        victims = (
            select(messages.c.seq, messages.c.published_at, messages.c.size_bytes)
            .where(messages.c.topic_id == topic_id, messages.c.published_at < before)
            .order_by(messages.c.published_at, messages.c.seq)
            .limit(limit)
        )
        with self._errors(), self.engine.begin() as conn:
            _take_turns(conn, [topic_id])
            if conn.dialect.name == "sqlite":
                # Take the write lock before reading: a transaction that reads first
                # cannot write once another process has committed (SQLITE_BUSY_SNAPSHOT).
                touch = topics.c.retention_seconds
                conn.execute(update(topics).where(topics.c.id == topic_id).values({touch: touch}))
            rows = conn.execute(through(victims, TIME_INDEX)).all()
            if not rows:
                return 0
            seqs = [row.seq for row in rows]
            gone = conn.execute(delete(messages).where(messages.c.seq.in_(seqs))).rowcount
            if gone != len(seqs):
                # Another process deleted some of them meanwhile: its transaction
                # counted them; this one must not count them again.
                raise StoreUnavailable("messages expired concurrently; expiring again")
            rollups.remove(conn, topic_id, [(row.published_at, row.size_bytes) for row in rows])
        return len(rows)

    def delete_topic(self, topic_id: int) -> None:
        with self._errors(), self.engine.begin() as conn:
            conn.execute(delete(messages).where(messages.c.topic_id == topic_id))
            conn.execute(delete(rollups_table).where(rollups_table.c.topic_id == topic_id))
            conn.execute(delete(topic_schemas).where(topic_schemas.c.topic_id == topic_id))
            if conn.execute(delete(topics).where(topics.c.id == topic_id)).rowcount == 0:
                raise NotFound(f"topic {topic_id} does not exist")

    def write_messages(self, batch: Sequence[tuple[int, NewMessage]]) -> WriteResult:
        """Store a batch in one transaction; an id already stored counts as a duplicate."""
        by_topic: dict[int, dict[str, NewMessage]] = {}
        names: dict[int, str] = {}
        for topic_id, message in batch:
            by_topic.setdefault(topic_id, {}).setdefault(message.message_id, message)
            names[topic_id] = message.topic
        stored: dict[str, int] = {}
        published: list[datetime] = []
        now = utcnow()
        with self._errors(), self.engine.begin() as conn:
            _take_turns(conn, sorted(by_topic))
            counted: dict[int, Iterable[NewMessage]] = {}
            for topic_id, batch_of_topic in by_topic.items():
                fresh = self._insert_new(conn, topic_id, batch_of_topic, now)
                if fresh:
                    counted[topic_id] = fresh.values()
                stored[names[topic_id]] = stored.get(names[topic_id], 0) + len(fresh)
                published.extend(m.published_at for m in fresh.values())
            rollups.add(conn, counted)
        received = Counter(message.topic for _, message in batch)
        duplicates = {name: count - stored.get(name, 0) for name, count in received.items()}
        return WriteResult(stored=stored, duplicates=duplicates, stored_published_at=published)

    def _insert_new(
        self, conn: Connection, topic_id: int, batch: dict[str, NewMessage], now: datetime
    ) -> dict[str, NewMessage]:
        """Insert the messages of ``batch`` not stored yet; those it inserted.

        On SQLite and on PostgreSQL through psycopg the insert itself says which rows were
        new (``RETURNING``), so the rollups count exactly what it inserted, whoever else
        writes. Elsewhere (MySQL, pg8000) the stored ids are looked up first, and the
        topic's row lock (``_take_turns``) keeps every other writer of the topic out
        between that check and the insert.
        """
        if returns_inserted(conn):
            inserted = insert_returning(conn, topic_id, list(batch.values()), now)
            return {mid: m for mid, m in batch.items() if mid in inserted}
        fresh = dict(batch)
        already = select(messages.c.message_id).where(
            messages.c.topic_id == topic_id, messages.c.message_id.in_(list(fresh))
        )
        for message_id in conn.execute(already).scalars():
            fresh.pop(message_id, None)  # exact match: ids compare byte for byte
        if fresh:
            self._insert(conn, topic_id, fresh.values(), now)
        return fresh

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
        """A page in ingest order or, with ``since``/``until``, in publish-time order
        (see ``domain.Position``); ``after_time`` with ``after_seq`` is where the latter
        continues."""
        query = self._page_query(PAGE_COLUMNS, topic_id, limit, after_seq, since, until, after_time)
        with self._errors(), self._reads.connect() as conn:
            return [StoredMessage(*row[:7]) for row in conn.execute(query)]

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
        """``list_messages`` bounded in bytes as well, cut by the database (so no more
        than the page is ever read into memory), and whether more rows follow."""
        in_time = since is not None or until is not None
        keys = [messages.c.seq, messages.c.published_at] if in_time else [messages.c.seq]
        row_bytes = (messages.c.size_bytes + func.length(messages.c.attributes)).label("row_bytes")
        # Filters go on the rows' own SELECT: a time-window page after a cursor is a
        # union of two on SQLite, and conditions on ``messages`` outside it joined the
        # table to it (the same row several times, or other rows). The topic as a
        # literal too, so that a partial field index of it applies.
        matching: list[ColumnElement[bool] | TextClause] = (
            [
                messages.c.topic_id == literal_column(str(int(topic_id))),
                *self.filter_clauses(filters),
            ]
            if filters
            else []
        )
        probe = self._page_query(
            [*keys, row_bytes], topic_id, limit + 1, after_seq, since, until, after_time, matching
        )
        query = within_bytes(probe.subquery(), PAGE_COLUMNS, max_bytes, in_time=in_time)
        with self._errors(), self._reads.connect() as conn, self.bounded(conn, bool(filters)):
            rows = conn.execute(query).all()
        shown = [StoredMessage(*row[:7]) for row in rows[:limit]]
        probed = int(rows[0][-1]) if rows else 0
        return shown, probed > len(shown)

    def _page_query(
        self,
        columns: Sequence[ColumnElement[Any]],
        topic_id: int,
        limit: int,
        after_seq: int,
        since: datetime | None,
        until: datetime | None,
        after_time: datetime | None,
        matching: Sequence[ColumnElement[bool] | TextClause] = (),
    ) -> Select[Any]:
        query: Select[Any] = select(*columns).where(*matching)
        dialect = self.engine.dialect.name
        if since is None and until is None:
            return in_ingest_order(query, topic_id, after_seq, limit, dialect)
        start = window_start(since, Position(after_seq, after_time))
        query = query.where(messages.c.topic_id == topic_id)
        return in_time_order(query, start, until, limit, dialect)

    def filter_clauses(self, filters: Filters) -> list[TextClause]:
        """``filters`` as WHERE clauses on ``messages`` in this store's dialect."""
        columns = field_index.indexed_columns(self.engine)
        return [
            text(sql).bindparams(**values)
            for sql, values in conditions(filters, self.engine.dialect.name, columns=columns)
        ]

    def bounded(self, conn: Connection, expensive: bool = True) -> AbstractContextManager[None]:
        """The statement timeout on ``conn`` for an ``expensive`` read."""
        if not expensive:
            return contextlib.nullcontext()
        return statement_timeout(conn, self.query_timeout)

    def last_seq(self, topic_id: int) -> int:
        with self._errors(), self._reads.connect() as conn:
            return int(conn.execute(self._last_seq_query(topic_id)).scalar() or 0)

    def _last_seq_query(self, topic_id: int) -> Select[Any]:
        """The topic's newest row, at the end of its range of ``(topic_id, seq)``."""
        dialect = self.engine.dialect.name
        query = select(messages.c.seq).where(*one_topic(topic_id, dialect))
        last = [column.desc() for column in by_seq(dialect)]
        return through(query, SEQ_INDEX).order_by(*last).limit(1)

    def count_messages(self, topic_id: int) -> int:
        query = select(func.count()).select_from(messages).where(messages.c.topic_id == topic_id)
        with self._errors(), self._reads.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket]:
        if self._rollups_built():
            return rollups.buckets(
                self._reads, topic_id, bucket=bucket, since=since, until=until, limit=limit
            )
        self.get_topic(topic_id)
        return topic_buckets(
            self.engine, topic_id, bucket=bucket, since=since, until=until, limit=limit
        )

    def aggregate(
        self, topic_id: int, query: AggregateQuery, *, limit: int, native: bool = True
    ) -> list[AggregateRow]:
        """``storage.aggregate`` within the statement timeout; ``native=False`` computes
        PostgreSQL's percentiles as the other stores do (for the contract tests)."""
        self.get_topic(topic_id)
        with self._errors(), self._reads.connect() as conn, self.bounded(conn):
            return aggregate_rows(conn, topic_id, query, limit=limit, native=native)

    def all_stats(self) -> list[TopicTotals]:
        return rollups.totals(self._reads) if self._rollups_built() else all_totals(self.engine)

    def stats_version(self, topic_id: int | None) -> StatsVersion | None:
        if not self._rollups_built():
            return None
        sql, values = (
            (STATS_VERSIONS, {}) if topic_id is None else (STATS_VERSION, {"topic": topic_id})
        )
        with self._errors(), self._reads.connect() as conn:
            return stats_version_of(driver_rows(conn, sql, values))

    def build_rollups(self, stop: threading.Event, pause: float = 0.05) -> None:
        """Add the rows stored before the rollups existed, a batch per transaction with a
        pause between batches (writes go on meanwhile), until done or ``stop``."""
        left = rollups.build_left(self.engine)
        if left is None:
            return
        log.info("building rollups for rows stored before them", extra={"seqs": left})
        while not stop.is_set():
            try:
                if not rollups.build_step(self.engine):
                    log.info("rollups built")
                    return
            except TransientError as exc:
                log.warning("rollup build paused: %s", exc.detail)
                stop.wait(5)
            stop.wait(pause)

    def _rollups_built(self) -> bool:
        """Whether the rollups hold every row (until then the stats read the rows)."""
        if not self._rollups_complete:
            self._rollups_complete = rollups.build_left(self.engine) is None
        return self._rollups_complete

    # -- data contracts -----------------------------------------------------------------
    def add_schema(
        self, topic_id: int, *, version: int, schema: str, compatibility: str
    ) -> SchemaVersion:
        now = utcnow()
        row = {
            "topic_id": topic_id,
            "version": version,
            "schema": schema,
            "compatibility": compatibility,
            "created_at": now,
        }
        enforce = update(topics).where(topics.c.id == topic_id).values(schema_version=version)
        conflict = self._errors(conflict=f"version {version} was added meanwhile; try again")
        with conflict, self.engine.begin() as conn:
            # The topic row first: a missing topic is a 404 (not a foreign-key error), and
            # its lock orders concurrent writers; the primary key refuses a second one.
            if conn.execute(enforce).rowcount == 0:
                raise NotFound(f"topic {topic_id} does not exist")
            conn.execute(topic_schemas.insert().values(row))
        return SchemaVersion(topic_id, version, schema, compatibility, now, current=True)

    def drop_schema(self, topic_id: int) -> None:
        stop = update(topics).where(topics.c.id == topic_id).values(schema_version=None)
        with self._errors(), self.engine.begin() as conn:
            if conn.execute(stop).rowcount == 0:
                raise NotFound(f"topic {topic_id} does not exist")

    def schema_versions(self, topic_id: int) -> list[SchemaVersion]:
        query = self._schemas().where(topics.c.id == topic_id).order_by(topic_schemas.c.version)
        with self._errors(), self._reads.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            self.get_topic(topic_id)
        return [_schema_version(row) for row in rows]

    def schema_version(self, topic_id: int, version: int) -> SchemaVersion:
        query = self._schemas().where(
            topic_schemas.c.topic_id == topic_id, topic_schemas.c.version == version
        )
        with self._errors(), self._reads.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            self.get_topic(topic_id)
            raise NotFound(f"topic {topic_id} has no schema version {version}")
        return _schema_version(row)

    def enforced_schemas(self, topic_ids: Sequence[int]) -> dict[int, SchemaVersion]:
        if not topic_ids:
            return {}
        query = self._schemas().where(
            topics.c.id.in_(set(topic_ids)), topic_schemas.c.version == topics.c.schema_version
        )
        with self._errors(), self._reads.connect() as conn:
            return {row.topic_id: _schema_version(row) for row in conn.execute(query)}

    @staticmethod
    def _schemas() -> Select[Any]:
        return select(
            topic_schemas.c.topic_id,
            topic_schemas.c.version,
            topic_schemas.c.schema,
            topic_schemas.c.compatibility,
            topic_schemas.c.created_at,
            topics.c.schema_version,
        ).join(topics, topics.c.id == topic_schemas.c.topic_id)

    def close(self) -> None:
        self.engine.dispose()


def _schema_version(row: Any) -> SchemaVersion:
    return SchemaVersion(
        topic_id=row.topic_id,
        version=row.version,
        schema=row.schema,
        compatibility=row.compatibility,
        created_at=row.created_at,
        current=row.schema_version == row.version,
    )
