"""``GET /v1/topics/{id}/aggregate``: metrics per time bucket and group, computed by the
database within the statement timeout and each caller's query budget."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from latam.aggregates import (
    MAX_GROUP_BY,
    MAX_METRICS,
    METRICS,
    PARAMS,
    AggregateQuery,
    AggregateRow,
    parse_query,
)
from latam.api.deps import ServiceDep, TopicId, as_utc, authorize
from latam.api.problems import documented
from latam.api.ratelimit import RateLimiter
from latam.errors import InvalidQuery
from latam.filters import parse_filters
from latam.service import Service

router = APIRouter(
    prefix="/v1/topics",
    tags=["aggregate"],
    dependencies=[Depends(authorize("read", "publish"))],
)
# Budget seconds an aggregation holds while it runs; the rest of its time is charged after.
HELD_SECONDS = 1.0


class AggregateItem(BaseModel):
    bucket: datetime | None = Field(description="Bucket start, UTC; null without `bucket`.")
    group: dict[str, Any] = Field(description="The group's value of each `group_by` field.")
    model_config = {"extra": "allow"}


class AggregateOut(BaseModel):
    data: list[AggregateItem] = Field(
        description="One item per bucket and group (empty ones left out), each metric under"
        " its name as asked (`count`, `avg:data.delay_min`, ...); by bucket, then group."
    )
    scanned: bool = Field(
        description="Always true: the database read every message of the window (no"
        " precomputed rollup), within LATAM_QUERY_TIMEOUT_SECONDS."
    )


def query_budget(app: FastAPI) -> RateLimiter:
    """The app's budget of database seconds per caller (made on first use)."""
    budget: RateLimiter | None = getattr(app.state, "query_budget", None)
    if budget is None:
        settings = app.state.settings
        budget = RateLimiter(
            rate=settings.query_cost_per_second, burst=settings.query_cost_burst_seconds
        )
        app.state.query_budget = budget
    return budget


def _caller(request: Request) -> str:
    key_id = getattr(request.state, "api_key", None)
    if key_id is not None:
        return f"key:{key_id}"
    return f"address:{request.client.host if request.client else 'unknown'}"


def _item(query: AggregateQuery, row: AggregateRow) -> dict[str, Any]:
    bucket = row.bucket.strftime("%Y-%m-%dT%H:%M:%SZ") if row.bucket else None
    item: dict[str, Any] = {
        "bucket": bucket,
        "group": {f.name: v for f, v in zip(query.group_by, row.group, strict=True)},
    }
    item.update((m.key, v) for m, v in zip(query.metrics, row.values, strict=True))
    return item


def aggregate_body(
    service: Service, topic_id: int, query: AggregateQuery, spent: list[float]
) -> bytes:
    """The response body, built in the store thread; the seconds the store took go to
    ``spent``, also when it failed (a timeout costs its full time)."""
    started = time.monotonic()
    try:
        rows = service.aggregate(topic_id=topic_id, query=query)
    finally:
        spent.append(time.monotonic() - started)
    return orjson.dumps({"data": [_item(query, row) for row in rows], "scanned": True})


def _parse(request: Request, **params: Any) -> AggregateQuery:
    for name in PARAMS:
        if len(request.query_params.getlist(name)) > 1:
            raise InvalidQuery(f"{name} is given more than once", field=name)
    filters = parse_filters(request.query_params.multi_items(), reserved=PARAMS)
    return parse_query(filters=filters, **params)


@router.get(
    "/{topic_id}/aggregate",
    response_model=AggregateOut,
    responses=documented(400, 404, 422, 429),
)
async def aggregate(
    topic_id: TopicId,
    request: Request,
    service: ServiceDep,
    metrics: Annotated[
        str | None,
        Query(
            max_length=2000,
            description=f"Up to {MAX_METRICS}, comma-separated, of {', '.join(METRICS)};"
            " all but count name a field (`avg:data.delay_min`). Default: count.",
        ),
    ] = None,
    bucket: Annotated[
        str | None,
        Query(description="minute, hour or day (UTC); without it one bucket over the window."),
    ] = None,
    group_by: Annotated[
        str | None,
        Query(
            max_length=1000,
            description=f"Up to {MAX_GROUP_BY} comma-separated fields (`data.origin`).",
        ),
    ] = None,
    since: Annotated[datetime | None, Query(description="published_at >= since")] = None,
    until: Annotated[datetime | None, Query(description="published_at < until")] = None,
) -> Response:
    """Metrics of the messages in the window per bucket and group, computed by the
    database; field filters (`data.origin=eq.SCL`) as on reads.

    The database reads every message of the window (`scanned: true`): the statement is
    stopped after LATAM_QUERY_TIMEOUT_SECONDS (422 query-timeout), and the seconds it ran
    are charged to the caller's query budget (LATAM_QUERY_COST_PER_SECOND, bursting to
    LATAM_QUERY_COST_BURST_SECONDS; 429 with Retry-After once spent). At most 1,000
    rows (groups x buckets), else 400.
    """
    query = _parse(
        request,
        metrics=metrics,
        bucket=bucket,
        group_by=group_by,
        since=as_utc(since),
        until=as_utc(until),
    )
    budget, caller = query_budget(request.app), _caller(request)
    if (wait := budget.acquire(caller, HELD_SECONDS)) > 0:
        raise HTTPException(
            429,
            "the query budget of this caller is spent: aggregations may use"
            " LATAM_QUERY_COST_PER_SECOND seconds of database time per second",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    spent: list[float] = []
    try:
        body = await service.in_store_thread(aggregate_body, service, topic_id, query, spent)
    finally:
        used = sum(spent)
        if used > HELD_SECONDS:
            budget.charge(caller, used - HELD_SECONDS)
        else:
            budget.refund(caller, HELD_SECONDS - used)
    timing = f"db;dur={used * 1000:.1f}"
    return Response(body, media_type="application/json", headers={"Server-Timing": timing})
