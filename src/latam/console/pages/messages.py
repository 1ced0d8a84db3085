"""A topic's page: its figures, schema and chart, a message browser, and a live tail.

The browser pages by cursor, in ingest order or, with since/until, in publish-time order,
as ``GET /v1/topics/{id}/messages`` does. The tail starts after the newest stored message
and asks for what follows every 2 s (``/tail?cursor=``): each answer carries the cursor
of its next request, so pausing keeps the last one and resuming goes on from it, with no
message missed or shown twice.

The browser's ``where`` box takes the API's field filters (``data.flight=eq.LA800``),
separated by spaces; a cursor goes on only with the same filters, as on the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from latam.console.charts import Chart, chart, filled, window
from latam.console.state import console_of
from latam.console.web import call, render
from latam.errors import InvalidQuery, InvalidRequest, NotFound, QueryTooExpensive
from latam.filters import NO_FILTERS, Filters, parse_filters
from latam.service import MessagePage, Service
from latam.storage.port import SchemaVersion, StoredMessage, TopicTotals

router = APIRouter()
PAGE_SIZE = 25
PAGE_BYTES = 1024 * 1024
TAIL_SIZE = 100
TAIL_BYTES = 512 * 1024
TAIL_SECONDS = 2
TopicId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Bucket = Literal["minute", "hour", "day"]


@dataclass(frozen=True, slots=True)
class Browse:
    """What the message browser was asked for."""

    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    error: str = ""
    filters: Filters = NO_FILTERS

    @classmethod
    def parse(cls, since: str, until: str, cursor: str | None, where: str = "") -> Browse:
        try:
            filters = parse_filters(_pairs(where), reserved=())
        except InvalidQuery as exc:
            return cls(error=f"where: {exc.field}: {exc.detail}")
        try:
            return cls(_moment(since), _moment(until), cursor or None, filters=filters)
        except ValueError:
            return cls(error="since and until must be dates and times, e.g. 2026-03-10T12:30")


def _pairs(where: str) -> list[tuple[str, str]]:
    """``data.a=eq.1 attributes.b=neq.x`` as (name, value) pairs; a term without ``=``
    is kept whole, for the filter parser to name it."""
    pairs = []
    for term in where.split():
        name, _, value = term.partition("=")
        pairs.append((name, value))
    return pairs


def _moment(text: str) -> datetime | None:
    """A time typed in the form: ISO 8601, UTC unless it names an offset."""
    if not text.strip():
        return None
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def typed(value: datetime | None) -> str:
    """A time as the form shows it: ISO 8601 in UTC, without the offset."""
    if value is None:
        return ""
    precision = "microseconds" if value.microsecond else "seconds"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=precision)


@dataclass(frozen=True, slots=True)
class TopicView:
    totals: TopicTotals | None
    schema: SchemaVersion | None
    versions: int
    page: MessagePage | None
    error: str
    tail_cursor: str
    chart: Chart


def _view(service: Service, topic_id: int, browse: Browse, bucket: str) -> TopicView:
    totals = next((t for t in service.all_stats() if t.topic_id == topic_id), None)
    try:
        schema: SchemaVersion | None = service.current_schema(topic_id=topic_id)
    except NotFound:
        schema = None
    versions = len(service.schema_versions(topic_id=topic_id))
    page, error = None, browse.error
    if not error:
        try:
            page = service.read_messages(
                topic_id=topic_id,
                limit=PAGE_SIZE,
                cursor=browse.cursor,
                since=browse.since,
                until=browse.until,
                max_bytes=PAGE_BYTES,
                filters=browse.filters,
            )
        except (InvalidRequest, QueryTooExpensive) as exc:
            error = exc.detail
    first, count = window(bucket)
    stats = service.topic_stats(topic_id=topic_id, bucket=bucket, since=first)
    title = f"Messages per {bucket}, last {count} {bucket}s"
    shown = chart(filled(stats, first, count, bucket), title, bucket)
    return TopicView(
        totals, schema, versions, page, error, service.tail_cursor(topic_id=topic_id), shown
    )


def rows(messages: list[StoredMessage]) -> list[dict[str, Any]]:
    """Messages as the templates show them: data indented, attributes as pairs."""
    shown = []
    for message in messages:
        try:
            attributes = sorted(orjson.loads(message.attributes).items())
        except orjson.JSONDecodeError:
            attributes = [("(unreadable)", message.attributes)]
        shown.append({"message": message, "attributes": attributes})
    return shown


@router.get("/topics/{topic_id}")
async def topic_page(
    request: Request,
    topic_id: TopicId,
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    where: Annotated[str, Query(max_length=2000)] = "",
    bucket: Bucket = "hour",
) -> Response:
    console = console_of(request)
    await console.gate.viewer(request)
    service = console.service
    topic = await call(service, service.get_topic, topic_id=topic_id)
    browse = Browse.parse(since, until, cursor, where)
    view = await call(service, _view, service, topic_id, browse, bucket)
    return render(
        request,
        "topic.html",
        status=422 if view.error else 200,
        section="topics",
        topic=topic,
        view=view,
        browse=browse,
        since=typed(browse.since) if not browse.error else since,
        until=typed(browse.until) if not browse.error else until,
        where=where.strip(),
        messages=rows(view.page.items) if view.page else [],
        bucket=bucket,
        tail_seconds=TAIL_SECONDS,
        done=request.query_params.get("done", ""),
    )


@router.get("/topics/{topic_id}/tail")
async def tail(
    request: Request, topic_id: TopicId, cursor: Annotated[str, Query(max_length=200)]
) -> Response:
    """The messages stored after ``cursor``, and the poller that asks for what follows."""
    console = console_of(request)
    await console.gate.viewer(request)
    page = await call(
        console.service,
        console.service.read_messages,
        topic_id=topic_id,
        limit=TAIL_SIZE,
        cursor=cursor,
        max_bytes=TAIL_BYTES,
    )
    return render(
        request,
        "_tail.html",
        topic_id=topic_id,
        messages=rows(page.items),
        cursor=page.tail_cursor or cursor,
        more=page.next_cursor is not None,
        tail_seconds=TAIL_SECONDS,
    )
