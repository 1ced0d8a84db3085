"""Topics: the list with counts, create, rename, and delete after a confirmation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from latam.console.gate import audit
from latam.console.state import Console, console_of
from latam.console.web import Refused, call, read_form, redirect, render
from latam.domain import Topic
from latam.storage.port import TopicTotals

router = APIRouter()
PAGE_SIZE = 50
TopicId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _totals(console: Console) -> dict[int, TopicTotals]:
    return {row.topic_id: row for row in console.service.all_stats()}


async def _list(
    request: Request, cursor: str | None, *, status: int = 200, error: str = "", name: str = ""
) -> Response:
    console = console_of(request)
    page = await call(console.service, console.service.list_topics, limit=PAGE_SIZE, cursor=cursor)
    totals = await call(console.service, _totals, console)
    return render(
        request,
        "topics.html",
        status=status,
        section="topics",
        topics=page.items,
        totals=totals,
        next_cursor=page.next_cursor,
        paged=cursor is not None,
        error=error,
        name=name,
        done=request.query_params.get("done", ""),
    )


@router.get("/topics")
async def topics(
    request: Request, cursor: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    await console_of(request).gate.viewer(request)
    return await _list(request, cursor)


@router.post("/topics")
async def create_topic(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    name = form.get("name")
    try:
        topic: Topic = await call(console.service, console.service.create_topic, name=name)
    except Refused as exc:
        if exc.status not in {409, 422}:
            raise
        return await _list(request, None, status=exc.status, error=exc.message, name=name)
    audit(viewer.key_id, "topic created", topic_id=topic.id)
    return redirect(request, f"/console/topics/{topic.id}?done=created")


@router.post("/topics/{topic_id}/rename")
async def rename_topic(request: Request, topic_id: TopicId) -> Response:
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    await call(
        console.service, console.service.rename_topic, topic_id=topic_id, name=form.get("name")
    )
    audit(viewer.key_id, "topic renamed", topic_id=topic_id)
    return redirect(request, f"/console/topics/{topic_id}?done=renamed")


@router.get("/topics/{topic_id}/delete")
async def confirm_delete(request: Request, topic_id: TopicId) -> Response:
    console = console_of(request)
    await console.gate.viewer(request, "admin")
    topic = await call(console.service, console.service.get_topic, topic_id=topic_id)
    totals = (await call(console.service, _totals, console)).get(topic_id)
    return render(
        request,
        "confirm.html",
        section="topics",
        title=f"Delete topic {topic.name}?",
        action=f"/console/topics/{topic_id}/delete",
        verb="Delete the topic and its messages",
        cancel=f"/console/topics/{topic_id}",
        topic=topic,
        count=totals.count if totals else 0,
        what="topic",
    )


@router.post("/topics/{topic_id}/delete")
async def delete_topic(request: Request, topic_id: TopicId) -> Response:
    console = console_of(request)
    form = await read_form(request)
    viewer = await console.gate.poster(request, form, "admin")
    if "confirm" not in form.fields:
        return redirect(request, f"/console/topics/{topic_id}/delete")
    await call(console.service, console.service.delete_topic, topic_id=topic_id)
    audit(viewer.key_id, "topic deleted", topic_id=topic_id)
    return redirect(request, "/console/topics?done=deleted")
