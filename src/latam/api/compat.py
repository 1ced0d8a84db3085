"""The original ``/api/data`` contract, kept byte-for-byte for existing clients.

Its JSON uses the ``", "`` and ``": "`` separators the original service produced.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from starlette.responses import Response

from latam.api.deps import ServiceDep, TopicId, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse, message_json
from latam.api.schemas import MessageList, NombreIn, NombreList, NombreOut, NombreWithIdIn

router = APIRouter(
    tags=["compatibility"],
    dependencies=[Depends(authorize("read", "admin"))],
)


class CompatResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False).encode()


def _topics(service: ServiceDep) -> CompatResponse:
    rows: list[list[Any]] = []
    cursor = None
    while True:
        page = service.list_topics(limit=1000, cursor=cursor)
        rows.extend([t.id, t.name] for t in page.items)
        if page.next_cursor is None:
            return CompatResponse({"data": rows})
        cursor = page.next_cursor


@router.get("/", response_model=NombreList)
def root(service: ServiceDep) -> Response:
    """Every topic as ``[id, nombre]`` pairs."""
    return _topics(service)


@router.get("/api/data", response_model=NombreList)
def list_data(service: ServiceDep) -> Response:
    """Every topic as ``[id, nombre]`` pairs."""
    return _topics(service)


@router.post(
    "/api/data",
    status_code=status.HTTP_201_CREATED,
    response_model=NombreOut,
    responses=documented(409),
)
def create(body: NombreIn, service: ServiceDep) -> Response:
    topic = service.create_topic(name=body.nombre)
    return CompatResponse({"id": topic.id, "nombre": topic.name}, status_code=201)


@router.put("/api/data/{topic_id}", response_model=NombreOut, responses=documented(404, 409))
def rename(topic_id: TopicId, body: NombreIn, service: ServiceDep) -> Response:
    topic = service.rename_topic(topic_id=topic_id, name=body.nombre)
    return CompatResponse({"id": topic.id, "nombre": topic.name})


@router.put("/api/data", response_model=NombreOut, responses=documented(404, 409))
def rename_by_body(body: NombreWithIdIn, service: ServiceDep) -> Response:
    topic = service.rename_topic(topic_id=body.id, name=body.nombre)
    return CompatResponse({"id": topic.id, "nombre": topic.name})


@router.get("/api/data/{topic_id}", response_model=MessageList, responses=documented(404))
def messages(
    topic_id: TopicId,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The stored messages of a topic, paged like ``/v1/topics/{id}/messages``."""
    page = service.read_messages(topic_id=topic_id, limit=limit, cursor=cursor)
    return OrjsonResponse(
        {"data": [message_json(m) for m in page.items], "next_cursor": page.next_cursor}
    )


@router.delete(
    "/api/data/{topic_id}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404)
)
def delete(topic_id: TopicId, service: ServiceDep) -> Response:
    service.delete_topic(topic_id=topic_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
