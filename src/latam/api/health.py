"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from latam import metrics
from latam.api.deps import ServiceDep, metrics_access
from latam.api.problems import documented, problem
from latam.api.schemas import Readiness

router = APIRouter(tags=["operations"])
# Mounted on the API port unless LATAM_METRICS_PORT serves it apart (``metrics_server``).
metrics_router = APIRouter(tags=["operations"], dependencies=[Depends(metrics_access)])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (it checks no dependency). On the event loop, so a full
    thread pool of slow requests does not make a live process look dead."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=documented(503))
def readyz(service: ServiceDep) -> Response | Readiness:
    """Ready when both the store and the broker answer; 503 otherwise, with what is
    wrong with each dependency that does not (``problems``)."""
    found = service.readiness()
    checks = {name: problem is None for name, problem in found.items()}
    if all(checks.values()):
        return Readiness(status="ready", checks=checks)
    problems = {name: problem for name, problem in found.items() if problem is not None}
    down = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
    return problem(
        503,
        f"unavailable: {down}",
        headers={"Retry-After": "5"},
        extra={"checks": checks, "problems": problems},
    )


@metrics_router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    """OpenMetrics, with exemplars, to a scraper that asks for it; Prometheus text else."""
    body, content_type = metrics.exposition(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)
