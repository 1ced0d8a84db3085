"""Request-scoped helpers shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from latam.service import Service


def get_service(request: Request) -> Service:
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


ServiceDep = Annotated[Service, Depends(get_service)]
