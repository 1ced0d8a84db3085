"""The built-in web console at ``/console``: server-rendered pages (Jinja2), partial
updates with htmx, charts with uPlot; served by the API process, built from the same
``Service`` (docs/console.md).

``install`` adds its routes, its static files (``/console/static/``) and its error
pages to the API's app. ``gate`` decides who may look and change what, ``sessions``
signs the cookie and the CSRF tokens, ``overview`` and ``readings`` compute the overview's
figures, ``web`` renders pages.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from latam.console.gate import Limiter
from latam.console.pages import router
from latam.console.state import Console
from latam.console.web import PREFIX, Refused, SignInRequired, htmx, redirect, render
from latam.keys import KeyVerifier
from latam.service import Service
from latam.settings import Settings
from latam.status import StatusPage

__all__ = ["PREFIX", "install"]


class Assets(StaticFiles):
    """The console's CSS, JS and vendored libraries; revalidated on each use (ETag), so
    an upgrade is seen at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = "no-cache"
        return response


def install(
    app: FastAPI,
    service: Service,
    settings: Settings,
    keys: KeyVerifier,
    *,
    failures: Limiter,
    status_page: StatusPage | None = None,
) -> None:
    """Serve the console from ``app`` (call before the app starts)."""
    app.state.console = Console.build(
        service, settings, keys, failures=failures, status_page=status_page
    )
    app.include_router(router)
    app.mount(f"{PREFIX}/static", Assets(packages=[("latam.console", "static")]), name="console")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(Refused, _refused)


async def _sign_in(request: Request, _: Exception) -> Response:
    if htmx(request):  # a partial: htmx follows HX-Redirect, the status says why
        headers = {"HX-Redirect": f"{PREFIX}/login"}
        return Response("sign in again", status_code=401, headers=headers, media_type="text/plain")
    return redirect(request, f"{PREFIX}/login")


async def _refused(request: Request, exc: Exception) -> Response:
    status, message = (exc.status, exc.message) if isinstance(exc, Refused) else (500, "error")
    return render(request, "error.html", status=status, status_code=status, message=message)
