"""Request-scoped helpers shared by the routers."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from latam.keys import ApiKey, KeyVerifier
from latam.service import Service


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
            # Verifying may read the key table: off the event loop.
            key = await run_in_threadpool(_bearer_key, request)
            topic = request.path_params.get("topic_id")
            topic_id = int(topic) if isinstance(topic, str) and topic.isdigit() else None
            # A topic-bound key reaches only its topics' routes, not listings of every topic.
            bound_elsewhere = key.topics is not None and topic_id is None
            if bound_elsewhere or not key.allows(scope, topic_id):
                raise HTTPException(403, f"this API key may not {scope} here")
            caller, limiter = f"key:{key.key_id}", state.key_limiter
            request.state.api_key = key.key_id
        wait = limiter.acquire(caller)
        if wait > 0:
            raise HTTPException(
                429, "rate limit exceeded", headers={"Retry-After": str(math.ceil(wait))}
            )

    return dependency


def _bearer_key(request: Request) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    keys: KeyVerifier = request.app.state.keys
    key = keys.verify(token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise HTTPException(
            401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return key
