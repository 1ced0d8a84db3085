"""API keys (admin scope): the list (never a secret), create (the key shown once), revoke.

A new key is shown once, on the page the creating form leads to (post, redirect, get: a
reload does not create a second key). It travels there in a cookie scoped to
``/console/keys`` (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS, no expiry
date, so never written to disk), which that page deletes as it shows the key: a
cookie, not this process's memory, so the page may be served by any API process.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from latam.console.gate import audit
from latam.console.state import console_of
from latam.console.web import PREFIX, Refused, call, read_form, redirect, render
from latam.keys import SCOPES, ApiKey, create_key, parse_token

router = APIRouter()
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]


NEW_KEY = "latam_console_new_key"


async def _page(request: Request, *, status: int = 200, **context: object) -> Response:
    console = console_of(request)
    keys: list[ApiKey] = await call(console.service, console.keys.store.list)
    token = request.cookies.get(NEW_KEY, "")
    parsed = parse_token(token)
    created = next((k for k in keys if parsed and k.key_id == parsed[0]), None)
    if created is not None:
        context.update(new_key=token, created=created)
    response = render(
        request,
        "keys.html",
        status=status,
        section="keys",
        keys=sorted(keys, key=lambda k: (k.revoked_at is not None, k.created_at)),
        scopes=SCOPES,
        done=request.query_params.get("done", ""),
        **context,
    )
    if token:  # shown now, or not at all: never again
        response.delete_cookie(NEW_KEY, path=f"{PREFIX}/keys", httponly=True, samesite="strict")
    return response


@router.get("/keys")
async def keys_page(request: Request) -> Response:
    await console_of(request).gate.viewer(request, "admin")
    return await _page(request)


TOPIC_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²"


def _topics(text: str) -> list[int] | None:
    parts = text.replace(",", " ").split()
    if not all(TOPIC_ID.fullmatch(part) and 0 < int(part) < 2**63 for part in parts):
        raise Refused(422, "topics must be topic ids, separated by commas or spaces")
    return [int(part) for part in parts] or None


@router.post("/keys")
async def create(request: Request) -> Response:
    """The new key, in the answer to this request only: it is stored as a hash."""
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    name, scopes = form.get("name").strip(), form.all("scopes")
    try:
        topics = _topics(form.get("topics"))
        key, token = await call(
            console.service, create_key, console.keys.store, name=name, scopes=scopes, topics=topics
        )
    except Refused as exc:
        if exc.status != 422:
            raise
        return await _page(request, status=422, error=exc.message, name=name, chosen=scopes)
    audit(viewer.key_id, "API key created", created_key=key.key_id, scopes=sorted(key.scopes))
    response = redirect(request, "/console/keys?done=key-created")
    response.set_cookie(
        NEW_KEY,
        token,
        path=f"{PREFIX}/keys",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/keys/{key_id}/revoke")
async def confirm_revoke(request: Request, key_id: KeyId) -> Response:
    console = console_of(request)
    await console.gate.viewer(request, "admin")
    key = await call(console.service, console.keys.store.get, key_id)
    return render(
        request,
        "confirm.html",
        section="keys",
        title=f"Revoke the API key {key.name}?",
        action=f"/console/keys/{key_id}/revoke",
        verb="Revoke the key",
        cancel="/console/keys",
        key=key,
        what="key",
    )


@router.post("/keys/{key_id}/revoke")
async def revoke(request: Request, key_id: KeyId) -> Response:
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    if "confirm" not in form.fields:
        return redirect(request, f"/console/keys/{key_id}/revoke")
    await call(console.service, console.keys.store.revoke, key_id)
    console.gate.forget(key_id)
    audit(viewer.key_id, "API key revoked", revoked_key=key_id)
    if key_id == viewer.key_id:  # its own session ends with it
        console.gate.sign_out(request)
        return redirect(request, "/console/login")
    return redirect(request, "/console/keys?done=revoked")
