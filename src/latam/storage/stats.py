"""Analytics queries: message counts and bytes, aggregated by the database.

Every figure comes out of one ``GROUP BY``; no message row is read into Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from latam.storage.dialects import bucket_start, translate_errors
from latam.storage.port import Bucket, TopicTotals
from latam.storage.schema import messages, topics


def topic_buckets(
    engine: Engine,
    topic_id: int,
    *,
    bucket: str,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
) -> list[Bucket]:
    """Non-empty buckets of a topic in time order, at most ``limit`` of them.

    ``since`` is inclusive and ``until`` exclusive, as when reading messages.
    """
    start = bucket_start(messages.c.published_at, bucket, engine.dialect.name).label("start")
    query = (
        select(start, func.count().label("n"), _sum_bytes())
        .where(messages.c.topic_id == topic_id)
        .group_by(start)
        .order_by(start)
        .limit(limit)
    )
    if since is not None:
        query = query.where(messages.c.published_at >= since)
    if until is not None:
        query = query.where(messages.c.published_at < until)
    with translate_errors(), engine.connect() as conn:
        rows = conn.execute(query).all()
    return [Bucket(_from_epoch(row.start), int(row.n), int(row.bytes)) for row in rows]


def all_totals(engine: Engine) -> list[TopicTotals]:
    """Count, bytes and first/last publish time of every topic, in topic id order."""
    query = (
        select(
            topics.c.id,
            topics.c.name,
            func.count(messages.c.seq).label("n"),
            _sum_bytes(),
            func.min(messages.c.published_at).label("first"),
            func.max(messages.c.published_at).label("last"),
        )
        .select_from(topics.outerjoin(messages, messages.c.topic_id == topics.c.id))
        .group_by(topics.c.id, topics.c.name)
        .order_by(topics.c.id)
    )
    with translate_errors(), engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        TopicTotals(row.id, row.name, int(row.n), int(row.bytes), row.first, row.last)
        for row in rows
    ]


def _sum_bytes() -> Any:
    # COALESCE: SUM over no rows is NULL; MySQL returns DECIMAL, hence int() by the callers.
    return func.coalesce(func.sum(messages.c.size_bytes), 0).label("bytes")


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=UTC)
