"""One pure-ASGI middleware for every request: request id, body limit, metrics, access
log, and a last-resort 500 that never leaks a stack trace."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from opentelemetry.trace import Span, SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latam import metrics, tracing
from latam.api.problems import problem

log = logging.getLogger("latam.access")
REQUEST_ID = "x-request-id"


class BodyTooLarge(Exception):
    """The request body went past the limit while streaming in."""


class BodyTimeout(Exception):
    """The client took too long to send its body."""


# Defence in depth for a JSON API; /docs loads Swagger UI and keeps a laxer policy.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_seconds: float = 30.0,
        gcp_project: str = "",
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.gcp_project = gcp_project
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")[:64]
        request_id = request_id or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                state["first_byte"] = time.perf_counter()
                headers = message.setdefault("headers", [])
                headers.append((REQUEST_ID.encode(), request_id.encode()))
                headers.extend(SECURITY_HEADERS)
                if not scope["path"].startswith(("/docs", "/redoc")):
                    headers.append(API_CSP)
            await send(message)

        trace_headers = {
            name: headers[name.encode()].decode("latin-1")
            for name in (tracing.TRACEPARENT, tracing.CLOUD_TRACE)
            if name.encode() in headers
        }
        parent = tracing.context_from(tracing.incoming_traceparent(trace_headers))
        metrics.HTTP_IN_FLIGHT.inc()
        with tracing.tracer.start_as_current_span(
            "latam.http", context=parent, kind=SpanKind.SERVER
        ) as span:
            try:
                await self._dispatch(
                    scope, headers, self._limited(headers, receive), send_wrapper, state
                )
            finally:
                metrics.HTTP_IN_FLIGHT.dec()
                elapsed = time.perf_counter() - started
                # A refusal held on purpose (deps.RefuseRepeatOffenders) is not slowness,
                # nor is a stream's length: its latency is the time to its first byte.
                served = elapsed - scope["state"].get("held_seconds", 0)
                if scope["state"].get("streaming") and "first_byte" in state:
                    served = state["first_byte"] - started
                self._record(scope, state["status"], served)
                if log.isEnabledFor(logging.INFO):
                    fields = {"request_id": request_id, **self._trace_fields(span)}
                    self._log(scope, state["status"], elapsed, fields)

    def _trace_fields(self, span: Span) -> dict[str, Any]:
        """Trace ids for log correlation, in Cloud Logging's field names when on GCP."""
        context = span.get_span_context()
        trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        if not self.gcp_project:
            return {"trace_id": trace_id, "span_id": span_id}
        return {
            "logging.googleapis.com/trace": f"projects/{self.gcp_project}/traces/{trace_id}",
            "logging.googleapis.com/spanId": span_id,
            "logging.googleapis.com/trace_sampled": context.trace_flags.sampled,
        }

    async def _dispatch(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
        state: dict[str, Any],
    ) -> None:
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
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
        except BodyTimeout:
            if not state["started"]:
                await problem(408, "request body not received in time")(scope, receive, send)
        except Exception as exc:
            log.error("unhandled error: %s", type(exc).__name__)
            if not state["started"]:
                await problem(500, "the server failed to handle the request")(scope, receive, send)

    def _limited(self, headers: dict[bytes, bytes], receive: Receive) -> Receive:
        seen = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done:
                # Only http.disconnect comes next, however late: a long response (a
                # stream) waits for it and must not time out for it.
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_seconds)
            except TimeoutError as exc:
                raise BodyTimeout from exc
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        return limited_receive

    @staticmethod
    def _labels(scope: Scope) -> tuple[str, str]:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        return template, method if method in metrics.HTTP_METHODS else "OTHER"

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        key = (*self._labels(scope), status // 100)
        children = self._children.get(key)
        if children is None:  # one lookup of each labelled child per route, method, class
            template, method, status_class = key
            children = self._children[key] = (
                metrics.HTTP_REQUESTS.labels(
                    route=template, method=method, status_class=f"{status_class}xx"
                ),
                metrics.HTTP_DURATION.labels(route=template, method=method),
            )
        children[0].inc()
        children[1].observe(elapsed)

    def _log(self, scope: Scope, status: int, elapsed: float, fields: dict[str, Any]) -> None:
        template, method = self._labels(scope)
        log.info(
            "%s %s %d %.1fms",
            method,
            template,
            status,
            elapsed * 1000,
            extra={
                **fields,
                "http_method": method,
                "route": template,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
            },
        )
