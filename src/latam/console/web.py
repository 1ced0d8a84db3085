"""What every console page shares: templates, the response headers, form bodies, and the
errors a page answers with (an HTML page, never problem+json)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from latam.errors import (
    Conflict,
    InvalidRequest,
    LatamError,
    NotFound,
    PermanentError,
    TransientError,
)
from latam.service import Service

PREFIX = "/console"
# No inline script or style anywhere: the pages load /console/static/* and nothing else.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {"content-security-policy": CSP, "cache-control": "no-store"}
MAX_FORM_FIELDS = 2000  # a selection of dead letters is at most a page of them

environment = Environment(
    loader=PackageLoader("latam.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInRequired(Exception):
    """No live session: pages go to the sign-in form, htmx partials get 401."""


class Refused(Exception):
    """A request the console answers with an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    """``template`` rendered with ``context`` (the viewer's CSRF token included)."""
    viewer = getattr(request.state, "console_viewer", None)
    body = environment.get_template(template).render(
        viewer=viewer, csrf=viewer.csrf if viewer else "", **context
    )
    response = HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)
    return with_cookie(request, response)


def redirect(request: Request, url: str) -> Response:
    """303 to ``url`` (after a form: the browser then GETs it)."""
    return with_cookie(request, RedirectResponse(url, status_code=303, headers=PAGE_HEADERS))


def with_cookie(request: Request, response: Response) -> Response:
    """``response`` carrying the session cookie the request made or ended, if any."""
    cookie = getattr(request.state, "console_cookie", None)
    if cookie is not None:
        value, max_age = cookie
        response.set_cookie(
            "latam_console",
            value,
            max_age=max_age,
            path=PREFIX,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
    return response


def htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


class Form:
    """An ``application/x-www-form-urlencoded`` body."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


# No console form comes near this (a corrected dead letter is the largest); the API's own
# body limit is far larger, and parsing 16 MiB of percent-escapes costs seconds of CPU.
MAX_FORM_BYTES = 1024 * 1024


async def read_form(request: Request, *, limit: int = MAX_FORM_BYTES) -> Form:
    """The request's form fields, from a body of at most ``limit`` bytes (413 beyond,
    read no further), parsed off the event loop; none from a body of another type, which
    then fails its CSRF check."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return Form({})
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the form is larger than {limit // 1024} KiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"the form is larger than {limit // 1024} KiB")
    try:
        fields = await run_in_threadpool(_parse_form, bytes(body))
    except ValueError as exc:
        raise Refused(400, "the form has too many fields") from exc
    return Form(fields)


def _parse_form(body: bytes) -> dict[str, list[str]]:
    text = body.decode("utf-8", errors="replace")
    return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)


Params = ParamSpec("Params")
Result = TypeVar("Result")


async def call(
    service: Service, fn: Callable[Params, Result], /, *args: Params.args, **kwargs: Params.kwargs
) -> Result:
    """``fn`` in a store thread; the product's errors become error pages."""
    try:
        return await service.in_store_thread(fn, *args, **kwargs)
    except LatamError as exc:
        raise refusal(exc) from exc


def refusal(exc: LatamError) -> Refused:
    if isinstance(exc, NotFound):
        return Refused(404, exc.detail)
    if isinstance(exc, Conflict):
        return Refused(409, exc.detail)
    if isinstance(exc, InvalidRequest | PermanentError):
        return Refused(422, exc.detail)
    if isinstance(exc, TransientError):
        return Refused(503, "a dependency is unavailable; try again shortly")
    return Refused(500, "the console failed to handle the request")


# -- what templates format ---------------------------------------------------------------
def when(value: datetime | None) -> str:
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def pretty(text: str | bytes) -> str:
    """JSON text indented for reading; the text itself when it is not JSON orjson reads."""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


def percent(value: float | None, digits: int = 2) -> str:
    return "unknown" if value is None else f"{value * 100:.{digits}f} %"


def number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.0f}"


environment.filters.update(when=when, duration=duration, pretty=pretty, percent=percent)
environment.filters["number"] = number
