"""Dead letters: a filtered list, one letter's bytes and reason, fix and replay, and
replay or purge of a selection after a confirmation."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from latam.broker.base import DeadLetter
from latam.console.gate import audit
from latam.console.state import console_of
from latam.console.web import Form, Refused, call, read_form, redirect, refusal, render
from latam.domain import RESERVED_ATTRIBUTES, loads_exact
from latam.errors import Conflict, InvalidRequest, LatamError, PermanentError, SchemaViolation
from latam.jsonschemas import parse_violation
from latam.service import LetterFilter

router = APIRouter()
PAGE_SIZE = 50
MAX_SELECTION = 1000
ACTIONS = {"replay": "Replay", "purge": "Purge"}
Text = Annotated[str, Query(max_length=200)]


@router.get("/dead-letters")
async def letters(
    request: Request, topic: Text = "", reason: Text = "", cursor: Text = ""
) -> Response:
    console = console_of(request)
    await console.gate.viewer(request, "admin")
    where = LetterFilter(topic or None, reason or None)
    page = await call(
        console.service,
        console.service.list_dead_letters,
        limit=PAGE_SIZE,
        cursor=cursor or None,
        where=where,
    )
    summary, summary_note = await console.overview.letter_summary()
    return render(
        request,
        "dead_letters.html",
        section="dead-letters",
        letters=page.items,
        next_cursor=page.next_cursor,
        paged=bool(cursor),
        topic=topic,
        reason=reason,
        summary=summary,
        summary_note=summary_note,
        done=request.query_params.get("done", ""),
        count=request.query_params.get("count", ""),
        message_id=request.query_params.get("message_id", ""),
    )


@router.get("/dead-letters/confirm")
async def confirm(request: Request, action: str = "replay") -> Response:
    """What a replay or purge of the chosen letters would touch, and the button to do it."""
    console = console_of(request)
    await console.gate.viewer(request, "admin")
    ids = request.query_params.getlist("ids")[:MAX_SELECTION]
    if action not in ACTIONS:
        raise Refused(400, "action must be replay or purge")
    if not ids:
        return redirect(request, "/console/dead-letters?done=none")
    return render(
        request,
        "confirm.html",
        section="dead-letters",
        title=f"{ACTIONS[action]} {len(ids)} dead letter{'s' if len(ids) != 1 else ''}?",
        action=f"/console/dead-letters/{action}-selected",
        verb=f"{ACTIONS[action]} {len(ids)}",
        cancel="/console/dead-letters",
        ids=ids,
        what=action,
    )


def _chosen(form: Form) -> list[str]:
    ids = [value for value in form.all("ids") if value][:MAX_SELECTION]
    if not ids:
        raise Refused(400, "no dead letter was chosen")
    return ids


async def _act_on_selection(request: Request, action: str) -> Response:
    """Replay (``replayed``) or purge (``purged``) the checked letters, once confirmed."""
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    ids = _chosen(form)
    if "confirm" not in form.fields:
        return redirect(request, "/console/dead-letters")
    service = console.service
    act = service.replay_dead_letters if action == "replayed" else service.purge_dead_letters
    count = await call(service, act, ids=ids)
    audit(viewer.key_id, f"dead letters {action}", ids=ids, count=count)
    console.overview.forget_letters()
    return redirect(request, f"/console/dead-letters?done={action}&count={count}")


@router.post("/dead-letters/replay-selected")
async def replay_selected(request: Request) -> Response:
    return await _act_on_selection(request, "replayed")


@router.post("/dead-letters/purge-selected")
async def purge_selected(request: Request) -> Response:
    return await _act_on_selection(request, "purged")


def shown_body(body: bytes) -> tuple[str, str]:
    """The letter's bytes as text ("utf-8"), or as base64 when they are not UTF-8."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"


def prefill(body: bytes) -> str:
    """The body to correct: indented when it is JSON (and indenting keeps every number
    as written), else its text; empty when it is not UTF-8."""
    try:
        text = body.decode("utf-8")
        indented = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
        return indented.decode() if loads_exact(indented) == loads_exact(body) else text
    except UnicodeDecodeError:
        return ""
    except ValueError:
        return text


def user_attributes(letter: DeadLetter) -> dict[str, str]:
    return {k: v for k, v in sorted(letter.attributes.items()) if k not in RESERVED_ATTRIBUTES}


async def _detail(
    request: Request, letter: DeadLetter, *, status: int = 200, **form: Any
) -> Response:
    text, encoding = shown_body(letter.body)
    violation = parse_violation(letter.reason)
    return render(
        request,
        "dead_letter.html",
        status=status,
        section="dead-letters",
        letter=letter,
        body=text,
        encoding=encoding,
        violation=violation,
        data=form.pop("data", prefill(letter.body)),
        attributes=form.pop("attributes", orjson.dumps(user_attributes(letter)).decode()),
        **form,
    )


@router.get("/dead-letters/{letter_id}")
async def letter(request: Request, letter_id: str) -> Response:
    console = console_of(request)
    await console.gate.viewer(request, "admin")
    found = await call(console.service, console.service.get_dead_letter, dead_letter_id=letter_id)
    return await _detail(request, found)


def _object(text: str, field: str) -> dict[str, Any]:
    try:
        value = loads_exact(text.encode())
    except ValueError as exc:
        raise InvalidRequest(f"{field} is not valid JSON: {exc}", field=field) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field} must be a JSON object", field=field)
    return value


@router.post("/dead-letters/{letter_id}/replay")
async def replay_corrected(request: Request, letter_id: str) -> Response:
    """Publish the letter again with the body (and attributes) typed in, checked as a
    publish is; the schema's failures are shown beside the form."""
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    service = console.service
    found = await call(service, service.get_dead_letter, dead_letter_id=letter_id)
    typed = {"data": form.get("data"), "attributes": form.get("attributes")}
    try:
        data = _object(typed["data"], "data")
        attributes = (
            _object(typed["attributes"], "attributes") if typed["attributes"].strip() else None
        )
        message_id = await service.in_store_thread(
            service.replay_corrected, dead_letter_id=letter_id, data=data, attributes=attributes
        )
    except SchemaViolation as exc:
        return await _detail(
            request, found, status=422, error=exc.detail, errors=exc.errors, **typed
        )
    except (InvalidRequest, PermanentError, Conflict) as exc:
        status = 409 if isinstance(exc, Conflict) else 422
        return await _detail(request, found, status=status, error=exc.detail, **typed)
    except LatamError as exc:
        raise refusal(exc) from exc
    audit(
        viewer.key_id, "dead letter corrected and replayed", ids=[letter_id], message_id=message_id
    )
    console.overview.forget_letters()
    done = urlencode({"done": "corrected", "message_id": message_id})
    return redirect(request, f"/console/dead-letters?{done}")
