"""Analytics endpoints: counts and bytes per time bucket, and totals per topic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from latam.api.deps import ServiceDep, TopicId, as_utc, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse
from latam.domain import isoformat
from latam.service import MAX_BUCKETS

router = APIRouter(tags=["stats"], dependencies=[Depends(authorize("read", "read"))])
BUCKET_HELP = f"Bucket width, aligned to UTC; at most {MAX_BUCKETS} buckets per response."


class StatsTotal(BaseModel):
    count: int = Field(description="Messages.")
    bytes: int = Field(description="Bytes of message `data` (UTF-8 JSON).")


class StatsBucket(StatsTotal):
    start: datetime = Field(description="Bucket start, UTC; the bucket runs one width long.")


class TopicStats(BaseModel):
    buckets: list[StatsBucket] = Field(description="Non-empty buckets in time order.")
    total: StatsTotal


class TopicTotalsOut(StatsTotal):
    topic_id: int
    topic: str
    first_published_at: datetime | None
    last_published_at: datetime | None


class StatsList(BaseModel):
    data: list[TopicTotalsOut]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)


@router.get("/v1/topics/{topic_id}/stats", response_model=TopicStats, responses=documented(404))
def topic_stats(
    topic_id: TopicId,
    service: ServiceDep,
    bucket: Annotated[Literal["minute", "hour", "day"], Query(description=BUCKET_HELP)] = "hour",
    since: Annotated[datetime | None, Query(description="published_at >= since")] = None,
    until: Annotated[datetime | None, Query(description="published_at < until")] = None,
) -> Response:
    """Messages and bytes per UTC bucket, computed by the database (at most 10,000 buckets).

    Buckets without messages are left out; a range wider than 10,000 buckets is 422.
    """
    buckets = service.topic_stats(
        topic_id=topic_id, bucket=bucket, since=as_utc(since), until=as_utc(until)
    )
    return OrjsonResponse(
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


@router.get("/v1/stats", response_model=StatsList)
def all_stats(service: ServiceDep) -> Response:
    """Message count, bytes and first/last publish time of every topic."""
    rows = service.all_stats()
    return OrjsonResponse(
        {
            "data": [
                {
                    "topic_id": row.topic_id,
                    "topic": row.topic,
                    "count": row.count,
                    "bytes": row.bytes,
                    "first_published_at": _iso(row.first_published_at),
                    "last_published_at": _iso(row.last_published_at),
                }
                for row in rows
            ]
        }
    )
