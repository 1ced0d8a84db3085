"""The live tail of a topic as Server-Sent Events: ``GET /v1/topics/{id}/stream``."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from latam import metrics
from latam.api.deps import ServiceDep, TopicId, authorize
from latam.api.problems import PROBLEM_TYPE, TITLES, documented
from latam.errors import InvalidQuery, InvalidRequest
from latam.filters import parse_filters
from latam.live import Ending, LiveTail, Subscription, TooManyStreams

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/topics",
    tags=["messages"],
    dependencies=[Depends(authorize("read", "publish"))],
)

STREAM_PARAMS = ("cursor", "from")
# Tells EventSource clients how long to wait before they reconnect (ms).
PREAMBLE = b"retry: 1000\n\n"


def error_frame(ending: Ending) -> bytes:
    """The last event of a stream that ends early: a problem, as on any error."""
    title = TITLES.get(ending.status, "Error")
    body = {
        "type": PROBLEM_TYPE + ending.code,
        "title": title,
        "status": ending.status,
        "detail": ending.detail,
    }
    return b"event: error\ndata: %s\n\n" % orjson.dumps(body)


class EventStream(Response):
    """Sends a subscription's frames until it ends or the client leaves; a send the client
    does not take within ``send_timeout`` seconds drops the connection."""

    media_type = "text/event-stream"

    def __init__(
        self, subscription: Subscription, *, send_timeout: float, status_code: int = 200
    ) -> None:
        self.subscription = subscription
        self.send_timeout = send_timeout
        self.status_code = status_code  # always 200; FastAPI's OpenAPI reads the default
        self.background = None
        # The middleware adds Cache-Control: no-store; proxies must not buffer either.
        self.init_headers({"X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(until_disconnect)
                # Caught inside the group: one raised through it arrives as an
                # ExceptionGroup, which no ``except TimeoutError`` outside would catch.
                try:
                    await self._stream(send)
                except TimeoutError:
                    # Not reading at all: nothing more can reach it; returning without
                    # the end of the body makes the server close the socket.
                    log.info(
                        "stream dropped: the client read nothing for %.0f s", self.send_timeout
                    )
                group.cancel_scope.cancel()
        finally:
            self.subscription.close()

    async def _stream(self, send: Send) -> None:
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        await send(start)
        await self._send(send, PREAMBLE)
        async for item in self.subscription.follow():
            if isinstance(item, Ending):
                metrics.STREAM_EVENTS.labels(kind="error").inc()
                await self._send(send, error_frame(item))
                break
            await self._send(send, item)
        with anyio.fail_after(self.send_timeout):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, chunk: bytes) -> None:
        with anyio.fail_after(self.send_timeout):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id` (a cursor), `event: message`, `data` (a"
        " message as on reads); a last `event: error` with a problem when the stream ends"
        " early.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **documented(400, 404, 429, 503),
}


@router.get("/{topic_id}/stream", response_class=EventStream, responses=STREAM_RESPONSES)
async def stream(
    topic_id: TopicId,
    request: Request,
    service: ServiceDep,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Start after this message: a cursor of a page read without"
            " since/until, or an event's id (Last-Event-ID wins over it).",
        ),
    ] = None,
    start: Annotated[
        Literal["start", "end"],
        Query(
            alias="from",
            description="Without a cursor: `end` (default) sends only what is stored next,"
            " `start` replays the topic from its first message.",
        ),
    ] = "end",
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Follow a topic live, in ingest order, as Server-Sent Events.

    A reconnect with `Last-Event-ID` (or `?cursor=`) continues exactly after that message,
    read from the store, so nothing is lost or repeated across a disconnect. Field
    filters apply as on message reads (`data.flight=eq.LA800`); a cursor continues only
    the same filters. There is no `since`/`until`: a stream follows ingest order. An idle
    stream sends a `: keep-alive` comment every LATAM_STREAM_HEARTBEAT_SECONDS; a client
    that falls LATAM_STREAM_QUEUE_BYTES behind gets `event: error` and the stream ends.
    """
    for name in ("since", "until"):
        if name in request.query_params:
            raise InvalidQuery(
                "a stream follows ingest order and has no time window; start it with"
                " ?cursor= (from a page read) or ?from=start",
                field=name,
            )
    filters = parse_filters(request.query_params.multi_items(), reserved=STREAM_PARAMS)
    try:
        after = await service.in_store_thread(
            service.stream_start,
            topic_id=topic_id,
            cursor=last_event_id or cursor,
            from_start=start == "start",
            filters=filters,
        )
    except InvalidRequest as exc:
        if last_event_id and exc.field == "cursor":
            exc.field = "Last-Event-ID"  # the client sent no cursor: name what it sent
        raise
    tail: LiveTail = request.app.state.live
    if tail.closing:
        raise HTTPException(503, "the server is stopping", headers={"Retry-After": "1"})
    key = getattr(request.state, "api_key", None)
    caller = f"key:{key}" if key else f"address:{request.client.host if request.client else ''}"
    try:
        subscription = tail.open(topic_id=topic_id, filters=filters, after=after, caller=caller)
    except TooManyStreams as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from exc
    request.state.streaming = True
    settings = request.app.state.settings
    return EventStream(subscription, send_timeout=settings.stream_send_timeout_seconds)
