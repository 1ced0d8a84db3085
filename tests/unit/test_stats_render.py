"""The hourly stats body is written from cached strings; it must be what orjson writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from latam.api.stats import buckets_json
from latam.domain import isoformat
from latam.storage.port import Bucket


def orjson_body(buckets: list[Bucket]) -> bytes:
    return orjson.dumps(
        {
            "buckets": [
                {"start": isoformat(b.start), "count": b.count, "bytes": b.bytes} for b in buckets
            ],
            "total": {
                "count": sum(b.count for b in buckets),
                "bytes": sum(b.bytes for b in buckets),
            },
        }
    )


def test_buckets_json_is_orjsons_body() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cases = [
        [],
        [Bucket(start, 1, 0)],
        [Bucket(start + timedelta(hours=h), h * 1_000 + 1, h * 2**40) for h in range(720)],
        [Bucket(datetime(1, 1, 1, tzinfo=UTC), 2**62, 2**62), Bucket(start, 3, 7)],
        [Bucket(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), 5, 11)],
    ]
    for buckets in cases:
        body = buckets_json(buckets)
        assert body == orjson_body(buckets)
        assert buckets_json(buckets) == body  # from the cache, the same again
