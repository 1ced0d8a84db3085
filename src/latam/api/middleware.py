"""One pure-ASGI middleware for every request: request id, body limit, metrics, access
log, and a last-resort 500 that never leaks a stack trace."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latam import metrics
from latam.api.problems import problem

log = logging.getLogger("latam.access")
REQUEST_ID = "x-request-id"


class BodyTooLarge(Exception):
    """The request body went past the limit while streaming in."""


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")[:64]
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message.setdefault("headers", []).append((REQUEST_ID.encode(), request_id.encode()))
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await self._dispatch(scope, self._limited(headers, receive), send_wrapper, state)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            self._record(scope, state["status"], time.perf_counter() - started, request_id)

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]
    ) -> None:
        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > self.max_body_bytes:
                raise BodyTooLarge
            await self.app(scope, receive, send)
        except BodyTooLarge:
            if not state["started"]:
                detail = f"request body is larger than {self.max_body_bytes} bytes"
                await problem(413, detail)(scope, receive, send)
        except Exception as exc:
            log.error("unhandled error: %s", type(exc).__name__)
            if not state["started"]:
                await problem(500, "the server failed to handle the request")(scope, receive, send)

    def _limited(self, headers: dict[bytes, bytes], receive: Receive) -> Receive:
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        return limited_receive

    @staticmethod
    def _record(scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        metrics.HTTP_REQUESTS.labels(
            route=template, method=method, status_class=f"{status // 100}xx"
        ).inc()
        metrics.HTTP_DURATION.labels(route=template, method=method).observe(elapsed)
        log.info(
            "%s %s %d %.1fms",
            method,
            template,
            status,
            elapsed * 1000,
            extra={
                "request_id": request_id,
                "http_method": method,
                "route": template,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
            },
        )
