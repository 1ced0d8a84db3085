"""RFC 9457 problem details: every error response of the API goes through here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from latam.errors import (
    Conflict,
    IncompatibleSchema,
    InvalidQuery,
    InvalidRequest,
    LatamError,
    NotFound,
    PermanentError,
    QueryTooExpensive,
    SchemaNotCurrent,
    SchemaViolation,
    StoreRejected,
    TransientError,
)

log = logging.getLogger(__name__)
PROBLEM_TYPE = "https://latam.dev/problems/"
MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for problem+json answers with these statuses."""
    return {
        status: {
            "description": TITLES[status],
            "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
            **({"headers": RETRY_AFTER} if status in {429, 503} else {}),
        }
        for status in statuses
    }


# Any operation may answer these: unparsable body, key missing or without the scope, body
# limit, media type, validation, rate limit, a dependency down.
COMMON_RESPONSES = documented(400, 401, 403, 413, 415, 422, 429, 503)


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """A problem+json response."""
    title = TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body",
            "message": err.get("msg", "invalid value"),
        }
        for err in exc.errors()
    ]


async def _on_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # nosec B101 - narrows the type; the handler is registered for exactly this class
    errors = _validation_errors(exc)
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return problem(422, f"invalid request: {fields}", slug="validation-error", errors=errors)


async def _on_http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # nosec B101 - narrows the type; the handler is registered for exactly this class
    return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_latam(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, LatamError)  # nosec B101 - narrows the type; the handler is registered for exactly this class
    if isinstance(exc, NotFound):
        return problem(404, exc.detail)
    if isinstance(exc, IncompatibleSchema):
        reasons = [{"message": why} for why in exc.problems]
        return problem(409, exc.detail, slug="incompatible-schema", errors=reasons)
    if isinstance(exc, Conflict):
        return problem(409, exc.detail)
    if isinstance(exc, SchemaViolation):
        return problem(
            422,
            exc.detail,
            slug="schema-violation",
            errors=list(exc.errors),
            extra={"schema_version": exc.version},
        )
    if isinstance(exc, InvalidQuery):
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
        return problem(400, exc.detail, slug="invalid-query", errors=errors)
    if isinstance(exc, QueryTooExpensive):
        return problem(422, exc.detail, slug="query-timeout")
    if isinstance(exc, InvalidRequest):
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
        return problem(422, exc.detail, slug="validation-error", errors=errors)
    if isinstance(exc, StoreRejected):
        # The database's message may quote the data or the schema: logged, not shown.
        log.warning("store rejected a request's data: %s", exc.detail)
        return problem(422, "the store rejected a value of the request", slug="store-rejected")
    if isinstance(exc, PermanentError):
        errors = [{"field": "messages", "message": exc.detail, "reason": exc.reason}]
        return problem(422, exc.detail, slug="invalid-message", errors=errors)
    if isinstance(exc, TransientError):
        log.warning("dependency unavailable: %s", exc.detail)
        # A schema problem is the operator's to fix and its detail is safe to show;
        # other dependency errors may carry driver details and stay generic.
        schema = isinstance(exc, SchemaNotCurrent)
        return problem(
            503,
            exc.detail if schema else "a dependency is unavailable; retry later",
            slug="schema-not-current" if schema else None,
            headers={"Retry-After": str(exc.retry_after_seconds)},
        )
    return await _on_unexpected(_, exc)


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    log.error("unexpected error: %s", type(exc).__name__)
    return problem(500, "the server failed to handle the request")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(LatamError, _on_latam)
