"""The overview: ``/console``, and its part htmx refreshes every 5 s."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from latam.console.charts import chart
from latam.console.overview import Figures
from latam.console.state import console_of
from latam.console.web import render

router = APIRouter()
REFRESH_SECONDS = 5


def _context(figures: Figures) -> dict[str, Any]:
    return {
        "figures": figures,
        "refresh": REFRESH_SECONDS,
        "chart": chart(figures.per_minute, "Messages published per minute, last hour", "minute"),
    }


@router.get("")
async def overview(request: Request) -> Response:
    console = console_of(request)
    await console.gate.viewer(request)
    figures = await console.overview.figures()
    return render(request, "overview.html", section="overview", **_context(figures))


@router.get("/overview")
async def overview_part(request: Request) -> Response:
    """The overview's figures alone: what the page swaps in every ``REFRESH_SECONDS``."""
    console = console_of(request)
    await console.gate.viewer(request)
    figures = await console.overview.figures()
    return render(request, "_overview.html", **_context(figures))
