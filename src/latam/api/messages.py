"""Native message endpoints: publish to and read from a topic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from latam import tracing
from latam.api.deps import ServiceDep, TopicId, as_utc, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse
from latam.api.schemas import BatchIn, MessageIn, MessageList, PublishOut
from latam.domain import loads_exact
from latam.filters import parse_filters
from latam.service import PublishItem

# The page's own query parameters; any other must be a field filter.
PAGE_PARAMS = frozenset({"limit", "cursor", "since", "until"})

router = APIRouter(
    prefix="/v1/topics",
    tags=["messages"],
    dependencies=[Depends(authorize("read", "publish"))],
)

PUBLISH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/MessageIn"},
                        {"$ref": "#/components/schemas/BatchIn"},
                    ]
                }
            }
        },
    }
}


def parse_publish_body(raw: bytes) -> tuple[list[PublishItem], bool]:
    """One message or ``{"messages": [...]}`` (a batch: True); errors name the
    offending fields."""
    try:
        payload: Any = loads_exact(raw)
    except ValueError as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"invalid JSON: {exc}", "type": "json_invalid"}]
        ) from exc
    batch = isinstance(payload, dict) and "messages" in payload
    try:
        if batch:
            items = BatchIn.model_validate(payload).messages
        else:
            items = [MessageIn.model_validate(payload)]
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from exc
    return [PublishItem(data=m.data, attributes=m.attributes, id=m.id) for m in items], batch


@router.post(
    "/{topic_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PublishOut,
    openapi_extra=PUBLISH_BODY,
    responses=documented(404),
)
async def publish(topic_id: TopicId, request: Request, service: ServiceDep) -> Response:
    """Publish one message or a batch (1-1000). 202 means durably on the broker."""
    items, batch = parse_publish_body(await request.body())
    with tracing.tracer.start_as_current_span("latam.publish") as span:
        span.set_attribute("messaging.batch.message_count", len(items))
        ids = await run_in_threadpool(
            service.publish,
            topic_id=topic_id,
            items=items,
            traceparent=tracing.current_traceparent(),
            batch=batch,
        )
    return OrjsonResponse({"message_ids": ids}, status_code=status.HTTP_202_ACCEPTED)


@router.get("/{topic_id}/messages", response_model=MessageList, responses=documented(404))
async def read_messages(
    topic_id: TopicId,
    request: Request,
    service: ServiceDep,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=1000,
            description="Rows at most; a page also stops after the row that brings its"
            " data and attributes to LATAM_MAX_PAGE_BYTES (4 MiB by default).",
        ),
    ] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[
        datetime | None,
        Query(description="published_at >= since; the page is then in publish-time order"),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description="published_at < until; the page is then in publish-time order"),
    ] = None,
) -> Response:
    """Stored messages, paged by an opaque cursor.

    Without `since`/`until` a page is in ingest order (`seq`), the order a live reader
    follows with `tail_cursor`. With either, it is in publish-time order
    (`published_at`, then ingest order), which may differ when producers set
    `published_at` themselves: every row in the window is returned exactly once, and a
    page's cost does not depend on where the window falls in the topic. A cursor only
    continues a page of the same kind (400 otherwise); pass the same window with it.

    **Field filters**, PostgREST-style, any number up to 20, all of which must match:
    `data.flight=eq.LA800`, `data.delay_min=gte.15`, `data.status=in.(DELAYED,CANCELLED)`,
    `attributes.source=neq.ops`, `data.gate=is.null`, nested paths with dots. Operators
    `eq, neq, lt, lte, gt, gte, in, is`. A value that parses as a JSON number compares
    numerically and matches only numbers; `"..."` forces a string; `is` takes `null`
    (missing or null), `true` or `false`. A comparison never matches another type or a
    missing field. A cursor of a filtered page continues only the same filters (400
    otherwise). A filtered read runs under `LATAM_QUERY_TIMEOUT_SECONDS` (422 past it);
    `latam index create` indexes a hot field (docs/filters.md).
    """
    filters = parse_filters(request.query_params.multi_items(), reserved=PAGE_PARAMS)
    body = await service.read_page(
        topic_id=topic_id,
        limit=limit,
        cursor=cursor,
        since=as_utc(since),
        until=as_utc(until),
        slots=request.app.state.page_slots,
        filters=filters,
    )
    return Response(body, media_type="application/json")
