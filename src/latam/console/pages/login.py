"""Signing in with an API key, and out."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from latam.console.gate import audit
from latam.console.sessions import COOKIE
from latam.console.state import console_of
from latam.console.web import Refused, read_form, redirect, render
from latam.keys import parse_token

router = APIRouter()

# A key and a CSRF token: anything larger is not a sign-in.
SIGN_IN_FORM_BYTES = 64 * 1024


@router.get("/login")
async def login_form(request: Request) -> Response:
    gate = console_of(request).gate
    if gate.open:
        return redirect(request, "/console")
    return render(request, "login.html", section="login", login_csrf=gate.visitor_csrf(request))


@router.post("/login")
async def login(request: Request) -> Response:
    gate = console_of(request).gate
    form = await read_form(request, limit=SIGN_IN_FORM_BYTES)
    if not gate.visitor_csrf_ok(request, form):
        raise Refused(403, "the sign-in form has expired or did not come from this console")
    token = form.get("key")
    found = await gate.sign_in(request, token) if token.strip() else "enter an API key"
    if isinstance(found, str):
        parsed = parse_token(token.strip())
        audit(parsed[0] if parsed else None, "console sign-in refused", reason=found)
        return render(
            request,
            "login.html",
            status=401,
            section="login",
            error=found,
            login_csrf=gate.visitor_csrf(request),
        )
    audit(found.key_id, "console sign-in", key_name=found.name, scopes=sorted(found.scopes))
    return redirect(request, "/console")


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Ends the session (its CSRF token is enough: the key may already be revoked)."""
    gate = console_of(request).gate
    form = await read_form(request, limit=SIGN_IN_FORM_BYTES)
    session = gate.signer.read(request.cookies.get(COOKIE))
    if session is None or not gate.signer.csrf_ok(session, form.get("csrf")):
        raise Refused(403, "the form has expired or did not come from this console; reload it")
    gate.sign_out(request)
    audit(session.key_id, "console sign-out")
    return redirect(request, "/console/login" if not gate.open else "/console")
