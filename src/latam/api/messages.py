"""Native message endpoints: publish to and read from a topic."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from latam import tracing
from latam.api.deps import ServiceDep, TopicId, as_utc, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse
from latam.api.schemas import BatchIn, MessageIn, MessageList, PublishOut
from latam.domain import loads_exact
from latam.filters import NO_FILTERS, parse_filters
from latam.service import PublishItem

# The page's own query parameters; any other must be a field filter.
PAGE_PARAMS = frozenset({"limit", "cursor", "since", "until"})
DEFAULT_LIMIT, MAX_LIMIT, MAX_CURSOR = 100, 1000, 200

check_caller = authorize("read", "publish")
router = APIRouter(prefix="/v1/topics", tags=["messages"], dependencies=[Depends(check_caller)])

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
            le=MAX_LIMIT,
            description="Rows at most; a page also stops after the row that brings its"
            " data and attributes to LATAM_MAX_PAGE_BYTES (4 MiB by default).",
        ),
    ] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
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


# What PageRoute takes: a topic id of plain digits that fits in 64 bits, a limit of
# plain digits (no sign, no leading zero, no "_"), a cursor of the characters of
# domain.encode_cursor, which a query string carries unescaped.
PLAIN_PAGE = re.compile(r"/v1/topics/([1-9][0-9]{0,17})/messages")
PLAIN_LIMIT = re.compile(rb"[1-9][0-9]{0,3}")
PLAIN_CURSOR = re.compile(rb"[A-Za-z0-9_-]{1,%d}" % MAX_CURSOR)


def plain_page_query(query: bytes) -> tuple[int, str | None] | None:
    """(limit, cursor) of a query that holds at most one of each, written as above;
    None for any other query (filters, a time window, a repeated or odd parameter)."""
    limit, cursor = DEFAULT_LIMIT, None
    if not query:
        return limit, cursor
    names: set[bytes] = set()
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name in names:
            return None
        names.add(name)
        if name == b"limit" and PLAIN_LIMIT.fullmatch(value) and int(value) <= MAX_LIMIT:
            limit = int(value)
        elif name == b"cursor" and PLAIN_CURSOR.fullmatch(value):
            cursor = value.decode("ascii")
        else:
            return None
    return limit, cursor


class PageRoute(BaseRoute):
    """``GET /v1/topics/{topic_id}/messages`` with no more than ``limit`` and ``cursor``:
    the read that readers and exporters repeat all day, answered without FastAPI's
    per-request parameter and dependency machinery (in process, 390 µs of CPU a page on
    the embedded store before, 245 µs after; docs/benchmarks.md).

    It takes only a request that ``read_messages`` would read the same way
    (``plain_page_query``); any other, an invalid one included, goes on to
    ``read_messages``, which documents the endpoint and words its errors. Both check the
    caller with ``check_caller`` and read through ``Service.read_page``; a test holds
    them to the same answers (tests/integration/test_page_route.py). FastAPI's
    ``dependency_overrides`` do not reach this route: latam uses none."""

    path = path_format = "/v1/topics/{topic_id}/messages"  # the metrics' route label

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Under a root path (a proxy's prefix), FastAPI's route works the path out.
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return Match.NONE, {}
        found = PLAIN_PAGE.fullmatch(scope["path"])
        query = plain_page_query(scope["query_string"]) if found else None
        if found is None or query is None:
            return Match.NONE, {}
        child = {"route": self, "path_params": {"topic_id": found[1]}, "latam.page": query}
        return Match.FULL, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await check_caller(request)
        limit, cursor = scope["latam.page"]
        state = request.app.state
        body = await state.service.read_page(
            topic_id=int(scope["path_params"]["topic_id"]),
            limit=limit,
            cursor=cursor,
            since=None,
            until=None,
            slots=state.page_slots,
            filters=NO_FILTERS,
        )
        await Response(body, media_type="application/json")(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)


def install_page_route(app: FastAPI) -> None:
    """PageRoute ahead of every other route of ``app``."""
    app.router.routes.insert(0, PageRoute())
