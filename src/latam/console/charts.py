"""Counts per time bucket as a chart: the data console.js draws (``data-chart``), and the
same figures as a table for whoever does not see the canvas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from latam.domain import BUCKET_SECONDS, utcnow
from latam.storage.port import Bucket

# How far back a topic's chart looks, per bucket width: 60 minutes, 48 hours, 30 days.
SPANS = {"minute": 60, "hour": 48, "day": 30}


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    bucket: str
    data: str  # JSON: {"x": [Unix seconds], "y": [counts], "label", "bucket"}
    rows: tuple[tuple[datetime, int], ...]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.rows)

    @property
    def peak(self) -> int:
        return max((count for _, count in self.rows), default=0)


def chart(points: Sequence[tuple[datetime, int]], title: str, bucket: str) -> Chart:
    data = {
        "x": [int(start.timestamp()) for start, _ in points],
        "y": [count for _, count in points],
        "label": f"Messages per {bucket}",
        "bucket": bucket,
    }
    return Chart(title, bucket, orjson.dumps(data).decode(), tuple(points))


def window(bucket: str, now: datetime | None = None) -> tuple[datetime, int]:
    """The first bucket start and the number of buckets of a topic's chart."""
    width, count = BUCKET_SECONDS[bucket], SPANS[bucket]
    current = int((now or utcnow()).timestamp()) // width * width
    return datetime.fromtimestamp(current - (count - 1) * width, UTC), count


def filled(
    buckets: Iterable[Bucket], first: datetime, count: int, bucket: str
) -> list[tuple[datetime, int]]:
    """Every bucket from ``first``, 0 where the stats have none."""
    width = timedelta(seconds=BUCKET_SECONDS[bucket])
    counts = {first + i * width: 0 for i in range(count)}
    for found in buckets:
        if found.start in counts:
            counts[found.start] += found.count
    return list(counts.items())
