"""Request-scoped helpers shared by the routers."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from latam.api.problems import problem
from latam.api.ratelimit import RateLimiter
from latam.keys import ApiKey, KeyVerifier
from latam.service import Service

audit_log = logging.getLogger("latam.audit")


# Dependencies are async: FastAPI runs a sync one in the thread pool, a hop per request.
async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def require_json(request: Request) -> None:
    """Bodies must be JSON; a request without a body passes."""
    if request.method not in {"POST", "PUT", "PATCH"}:
        return
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if has_body and not (media == "application/json" or media.endswith("+json")):
        raise HTTPException(415, "request body must be application/json")


def as_utc(value: datetime | None) -> datetime | None:
    """A query timestamp without an offset means UTC, on every endpoint."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


ServiceDep = Annotated[Service, Depends(get_service)]
# Ids are 64-bit in every store: a larger number is refused (422) before it reaches a driver.
MAX_ID = 2**63 - 1
TopicId = Annotated[int, Path(ge=1, le=MAX_ID)]


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def authorize(read: str, write: str) -> Callable[[Request], Awaitable[None]]:
    """The one dependency of every route of a router: a JSON body where there is one,
    scope ``read`` for GET and ``write`` for other methods, then the caller's rate limit."""

    async def dependency(request: Request) -> None:
        require_json(request)
        state = request.app.state
        scope = read if request.method in {"GET", "HEAD"} else write
        caller = request.client.host if request.client else "unknown"
        limiter = state.anonymous_limiter
        if state.settings.auth_enabled and not (scope == "read" and state.settings.anonymous_read):
            key = await authenticate(request, caller)
            topic = request.path_params.get("topic_id")
            topic_id = int(topic) if isinstance(topic, str) and topic.isdigit() else None
            # A topic-bound key reaches only its topics' routes, not listings of every topic.
            bound_elsewhere = key.topics is not None and topic_id is None
            if bound_elsewhere or not key.allows(scope, topic_id):
                raise HTTPException(403, f"this API key may not {scope} here")
            caller, limiter = f"key:{key.key_id}", state.key_limiter
            request.state.api_key = key.key_id
        _limit(limiter, caller)

    return dependency


async def authenticate(request: Request, address: str) -> ApiKey:
    """The caller's live key, else 401, or 429 once ``address`` has failed too often.

    A malformed token, a cached key and a cached unknown id are answered on the event
    loop without I/O; only a read of the key store goes to the thread pool, and an
    address over its failure budget gets none for ids it has not shown before (keys
    already verified keep working from it, refreshed as usual).
    """
    failures = request.app.state.failed_auth_limiter
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    keys: KeyVerifier = request.app.state.keys
    key: ApiKey | None = None
    charged = False
    if scheme.lower() == "bearer":
        token = token.strip()
        found = keys.verify_cached(token)
        if found == "lookup":
            # Charged before the lookup, so concurrent lookups cannot overdraw the
            # budget; given back when the key turns out valid.
            if (wait := failures.acquire(address)) > 0:
                raise _too_many(wait, "too many failed authentications from this address")
            charged = True
        if isinstance(found, str):  # a lookup, or a refresh of a key verified before
            key = await run_in_threadpool(keys.verify, token)
        else:
            key = found
        if key is not None and charged:
            failures.refund(address)
    if key is None:
        if not charged and (wait := failures.acquire(address)) > 0:
            raise _too_many(wait, "too many failed authentications from this address")
        raise HTTPException(
            401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


def _limit(limiter: RateLimiter, caller: str) -> None:
    if (wait := limiter.acquire(caller)) > 0:
        raise _too_many(wait, "rate limit exceeded")


def _too_many(wait: float, detail: str) -> HTTPException:
    return HTTPException(429, detail, headers={"Retry-After": str(math.ceil(wait))})


async def metrics_access(request: Request) -> None:
    """``/metrics`` on the API port: open with auth off; with auth on, to loopback peers
    (a collector beside the process, e.g. Cloud Run's Managed Prometheus sidecar) and to
    admin keys, since it names every topic."""
    state = request.app.state
    address = request.client.host if request.client else "unknown"
    if not state.settings.auth_enabled or address in LOOPBACK:
        return
    key = await authenticate(request, address)
    if not key.allows("admin"):
        raise HTTPException(403, "this API key may not read metrics")


# Probes, and Pub/Sub's pushes (Google's tokens, verified by their own route).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v1/pubsub/push"})
TARPIT_SECONDS = 1.0


class RefuseRepeatOffenders:
    """Pure ASGI, before routing: a request that carries a token from an address past its
    failed-authentication budget gets its 429 here, unless the token is a key already
    verified (``KeyVerifier.verify_cached``), as ``authenticate`` would answer. Under a
    key-guessing flood each refusal then costs no routing, dependency resolution or key
    lookup (3.6 times as many refusals a second), and the answer is held up to a second
    first, so a flood on keep-alive connections slows to one refusal a second each;
    ``RequestMiddleware`` around it still logs and counts it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            state = scope["app"].state
            client = scope.get("client")
            address = client[0] if client else "unknown"
            wait = state.failed_auth_limiter.waiting(address)
            if wait > 0 and state.settings.auth_enabled:
                token = _bearer(scope)
                # Only a key already verified passes (also when its cache entry is due
                # for a refresh): a made-up id or a wrong secret is refused here.
                if token is not None and state.keys.verify_cached(token) in (None, "lookup"):
                    # Held before it is sent: a client that does not wait for Retry-After
                    # gets one answer a second per connection, at no CPU cost here.
                    # (RequestMiddleware leaves the hold out of the latency histogram.)
                    hold = min(wait, TARPIT_SECONDS)
                    scope.setdefault("state", {})["held_seconds"] = hold
                    await asyncio.sleep(hold)
                    detail = "too many failed authentications from this address"
                    refused = problem(429, detail, headers={"Retry-After": str(math.ceil(wait))})
                    await refused(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def audit(request: Request, action: str, **fields: object) -> None:
    """Log a change an API client made, with the id of the key that made it (None with
    authentication off), as ``action`` and ``key_id`` fields of the log line."""
    key_id = getattr(request.state, "api_key", None)
    audit_log.info("%s", action, extra={"action": action, "key_id": key_id, **fields})
