"""``GET /v1/topics/{id}/export``: a topic's messages streamed as NDJSON, CSV or Parquet.

Everything that can be refused is refused before the first byte, as problem+json: the
format, the fields, the filters, the window, a missing topic, and the first batch (a
filter that times out answers 422). An error after that cannot change the status any
more: NDJSON ends with a line ``{"error": {problem}}`` and then, as CSV and Parquet, the
chunked body is cut without its last chunk, so every client sees an incomplete transfer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from latam.api.deps import ServiceDep, TopicId, as_utc, authorize
from latam.api.negotiation import negotiate
from latam.api.problems import PROBLEM_TYPE, TITLES, documented
from latam.domain import utcnow
from latam.errors import InvalidRequest, NotFound, QueryTooExpensive, TransientError
from latam.export import MEDIA_TYPES, Export, ExportRange, Format, chunks, make_writer
from latam.export.fields import parse_fields
from latam.filters import parse_filters

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/v1/topics", tags=["messages"], dependencies=[Depends(authorize("read", "publish"))]
)
RESERVED = ("format", "since", "until", "fields")
# Rate-limit tokens an export costs on top of the one every request pays: it holds one
# of LATAM_MAX_CONCURRENT_EXPORTS slots and reads the whole range.
EXPORT_COST = 10


def _stamp(value: datetime | None, default: str) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ") if value else default


def disposition(topic: str, since: datetime | None, until: datetime | None, ext: str) -> str:
    """``attachment`` named ``<topic>-<from>-<to>.<ext>`` (``start`` without ``since``,
    the request's time without ``until``), ASCII-safe with the UTF-8 name beside it."""
    name = f"{topic}-{_stamp(since, 'start')}-{_stamp(until, _stamp(utcnow(), ''))}.{ext}"
    ascii_name = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in name
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def problem_of(exc: Exception) -> dict[str, Any]:
    """The problem an error mid-stream would have answered before it (no driver detail)."""
    if isinstance(exc, QueryTooExpensive):
        status, slug, detail = 422, "query-timeout", exc.detail
    elif isinstance(exc, NotFound):
        status, slug, detail = 404, "topic-deleted", "the topic was deleted during the export"
    elif isinstance(exc, TransientError):
        status, slug, detail = 503, None, "a dependency is unavailable; retry later"
    else:
        status, slug, detail = 500, None, "the server failed to handle the request"
    title = TITLES[status]
    kind = PROBLEM_TYPE + (slug or title.lower().replace(" ", "-"))
    return {"type": kind, "title": title, "status": status, "detail": detail}


class ExportSlots:
    """Exports one process streams at once; past the bound, 429."""

    def __init__(self, size: int) -> None:
        self.size, self.busy = size, 0

    def take(self) -> Callable[[], None]:
        """A slot, or 429; returns its release, which may be called more than once."""
        if self.busy >= self.size:
            detail = f"{self.size} exports are running in this process; retry later"
            raise HTTPException(429, detail, headers={"Retry-After": "5"})
        self.busy += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.busy -= 1

        return release


class ExportResponse(StreamingResponse):
    """A streamed export that gives its slot back however the response ends: streamed
    to the end, cut by an error, never started because the client went away, or dropped
    because the client took nothing for ``send_timeout`` seconds (a client that stops
    reading would otherwise hold its slot, and the store's rows, for as long as its
    connection stays up)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        release: Callable[[], None],
        *,
        send_timeout: float,
        **kw: Any,
    ):
        super().__init__(content, **kw)
        self.release = release
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            with anyio.fail_after(self.send_timeout):
                await send(message)

        try:
            await super().__call__(scope, receive, timed_send)
        except TimeoutError:
            # Returning without the end of the body makes the server close the socket.
            log.info("export dropped: the client read nothing for %.0f s", self.send_timeout)
        finally:
            self.release()


def _charge(request: Request) -> None:
    """``EXPORT_COST`` more tokens from the caller's bucket (as ``authorize`` picks it)."""
    state = request.app.state
    key_id = getattr(request.state, "api_key", None)
    if key_id is not None:
        caller, limiter = f"key:{key_id}", state.key_limiter
    else:
        caller = request.client.host if request.client else "unknown"
        limiter = state.anonymous_limiter
    if (wait := limiter.acquire(caller, EXPORT_COST)) > 0:
        raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(int(wait) + 1)})


def _slots(request: Request) -> ExportSlots:
    state = request.app.state
    if not hasattr(state, "export_slots"):
        state.export_slots = ExportSlots(state.settings.max_concurrent_exports)
    slots: ExportSlots = state.export_slots
    return slots


@router.get(
    "/{topic_id}/export",
    responses={
        200: {"content": {media: {} for media in MEDIA_TYPES.values()}},
        **documented(404, 406, 429),
    },
)
async def export(
    topic_id: TopicId,
    request: Request,
    service: ServiceDep,
    format: Annotated[str | None, Query(description="ndjson, csv or parquet")] = None,
    since: Annotated[datetime | None, Query(description="published_at >= since")] = None,
    until: Annotated[datetime | None, Query(description="published_at < until")] = None,
    fields: Annotated[
        str | None,
        Query(max_length=4000, description="message_id,published_at,data.flight,... (at most 50)"),
    ] = None,
) -> Response:
    """Every message of the range (filters as on reads, no page limit), streamed.

    The format comes from `format=` or else the `Accept` header. Without `since`/`until`
    the file is in ingest order, with either in publish-time order. CSV and Parquet
    columns are `fields` (default `message_id,published_at,ingested_at,data`); NDJSON
    writes whole messages as reads do unless `fields` is given.
    """
    fmt = negotiate(format, request.headers.get("accept"))
    columns = parse_fields(fields)
    filters = parse_filters(request.query_params.multi_items(), reserved=RESERVED)
    since, until = as_utc(since), as_utc(until)
    if since is not None and until is not None and since > until:
        raise InvalidRequest("since must not be after until", field="since")
    release = _slots(request).take()
    try:
        _charge(request)
        topic = await service.in_store_thread(service.store.get_topic, topic_id)
        where = ExportRange(topic_id, since, until, filters, batch_bytes=service.max_page_bytes)
        writer = make_writer(fmt, columns, all_fields=fields is None)
        job = Export(service.store, where, writer)
        body = chunks(job, service.store_limiter)
        first = await anext(body, b"")  # the first batch's errors are still a status
    except BaseException:
        release()
        raise
    headers = {"content-disposition": disposition(topic.name, since, until, fmt)}
    stream = _stream(first, body, job, fmt, topic_id)
    send_timeout = request.app.state.settings.stream_send_timeout_seconds
    return ExportResponse(
        stream, release, send_timeout=send_timeout, media_type=MEDIA_TYPES[fmt], headers=headers
    )


async def _stream(
    first: bytes,
    rest: AsyncIterator[bytes],
    job: Export,
    fmt: Format,
    topic_id: int,
) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    except Exception as exc:
        log.error(
            "export of topic %d stopped after %d rows: %s",
            topic_id,
            job.rows,
            type(exc).__name__,
            extra={"topic_id": topic_id, "rows": job.rows, "format": fmt},
        )
        if fmt == "ndjson":
            yield orjson.dumps({"error": problem_of(exc)}) + b"\n"
        raise  # no last chunk: the client sees the body cut short
