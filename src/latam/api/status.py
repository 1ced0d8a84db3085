"""``GET /status`` (HTML) and ``GET /status.json``: the public status page.

Public whatever ``LATAM_AUTH`` says, like the probes: the router has no ``authorize``
dependency. A process computes one snapshot per 30 s whoever asks (``latam.status``) and
renders it once; both answers say so to browsers and shared caches
(``Cache-Control: public, max-age=30`` with ``Age``).
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latam.api.status_html import CSP, render
from latam.service import Service
from latam.settings import Settings
from latam.status import Snapshot, StatusPage
from latam.status.page import TTL_SECONDS
from latam.status.slos import Catalog, load_catalog

log = logging.getLogger("latam")

router = APIRouter(tags=["status"])
PATHS = frozenset({"/status", "/status.json"})
REFRESH = math.ceil(TTL_SECONDS)
CACHE_CONTROL = f"public, max-age={REFRESH}"


def build_status_page(service: Service, settings: Settings) -> StatusPage:
    """The status page of the configured metrics source and canary topic. An unreadable
    SLO catalog is logged and leaves the page without SLOs (status ``unknown``): the
    status page never stops the API from starting."""
    url = settings.status_prometheus_url
    try:
        catalog = load_catalog()
    except (OSError, ValueError) as exc:
        log.error("status: the SLO catalog cannot be read, the page shows no SLO: %s", exc)
        catalog = Catalog(0, ())
    source = None
    if url:
        # Only here: the Prometheus adapter loads httpx (with rich and pygments, about
        # 5 MB), which an API process without LATAM_STATUS_PROMETHEUS_URL never needs.
        from latam.prometheus import PrometheusSource

        source = PrometheusSource(url)
    return StatusPage(
        service,
        source,
        canary_topic=settings.canary_topic,
        catalog=catalog,
    )


class RenderedStatus:
    """The current snapshot of ``page`` as JSON and HTML, rendered once per snapshot."""

    def __init__(self, page: StatusPage) -> None:
        self.page = page
        self._last: tuple[Snapshot, bytes, bytes, bytes] | None = None

    async def bodies(self, *, reload: bool = False) -> tuple[bytes, bytes]:
        """The JSON and the HTML (the self-reloading page with ``reload``)."""
        snapshot = await self.page.snapshot()
        last = self._last
        if last is None or last[0] is not snapshot:
            last = self._last = (
                snapshot,
                orjson.dumps(snapshot.as_json()),
                render(snapshot, refresh_seconds=REFRESH),
                render(snapshot, refresh_seconds=REFRESH, reload=True),
            )
        return last[1], last[3] if reload else last[2]

    def headers(self) -> dict[str, str]:
        return {"cache-control": CACHE_CONTROL, "age": str(int(self.page.age()))}


class SloDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    description: str
    objective: float
    state: Literal["ok", "burning", "exhausted", "unknown"]
    reason: str | None
    sli: float | None
    error_budget_remaining: float | None
    burn_rate_1h: float | None


class HourDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str
    rounds: int
    p50_delay_seconds: float | None
    max_delay_seconds: float | None
    sampled: bool


class CanaryDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["ok", "stale", "absent", "unknown"]
    reason: str | None
    last_round_at: str | None
    typical_spacing_seconds: float | None
    stale_after_seconds: float | None
    rounds_24h: int
    p50_delay_seconds: float | None
    max_delay_seconds: float | None
    buckets: list[HourDocument]


class StatusDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generated_at: str
    status: Literal["ok", "degraded", "unknown"]
    period_days: int
    slos: list[SloDocument]
    canary: CanaryDocument


def _rendered(request: Request) -> RenderedStatus:
    rendered: RenderedStatus = request.app.state.status
    return rendered


@router.get("/status.json", response_model=StatusDocument)
async def status_json(request: Request) -> Response:
    """Each SLO's state and error budget, and the synthetic canary's last 24 hours;
    public, computed at most every 30 s per process."""
    rendered = _rendered(request)
    body, _ = await rendered.bodies()
    return Response(body, media_type="application/json", headers=rendered.headers())


@router.get(
    "/status",
    response_class=Response,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
)
async def status_html(
    request: Request,
    refresh: Annotated[
        Literal["on"] | None,
        Query(description="`on`: the page reloads itself every 30 s (a wall screen)."),
    ] = None,
) -> Response:
    """The same as ``/status.json``, as a self-contained HTML page."""
    rendered = _rendered(request)
    _, body = await rendered.bodies(reload=refresh == "on")
    headers = {**rendered.headers(), "content-security-policy": CSP}
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


# Uptime and link checkers probe a status page with HEAD: the same answer without a body.
@router.head("/status.json", include_in_schema=False)
async def status_json_head(request: Request) -> Response:
    return await status_json(request)


@router.head("/status", include_in_schema=False)
async def status_html_head(
    request: Request, refresh: Annotated[Literal["on"] | None, Query()] = None
) -> Response:
    return await status_html(request, refresh)


OWN_HEADERS = (b"cache-control", b"content-security-policy")


class StatusHeaders:
    """Pure ASGI, around ``RequestMiddleware``: on the status routes (and on paths under
    ``prefixes``: the web console), a response's own ``Cache-Control`` and
    ``Content-Security-Policy`` stand, instead of the API-wide ``no-store`` and
    ``default-src 'none'`` (which would block the page's CSS) appended after them. Every
    other path passes untouched."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.prefixes = tuple(f"{prefix.rstrip('/')}/" for prefix in prefixes)
        self.exact = PATHS | {prefix.rstrip("/") for prefix in prefixes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._own(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def first_wins(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _first_only(message.get("headers", []))
            await send(message)

        await self.app(scope, receive, first_wins)

    def _own(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)


def _first_only(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with only the first of each of ``OWN_HEADERS``."""
    seen: set[bytes] = set()
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in OWN_HEADERS:
            if lowered in seen:
                continue
            seen.add(lowered)
        kept.append((name, value))
    return kept
