"""Native topic endpoints: /v1/topics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from latam.api.deps import ServiceDep, TopicId, authorize
from latam.api.problems import documented
from latam.api.schemas import TopicIn, TopicList, TopicOut, TopicUpdate
from latam.domain import Topic
from latam.errors import InvalidRequest

router = APIRouter(
    prefix="/v1/topics",
    tags=["topics"],
    dependencies=[Depends(authorize("read", "admin"))],
)


def topic_out(topic: Topic) -> TopicOut:
    return TopicOut(
        id=topic.id,
        name=topic.name,
        created_at=topic.created_at,
        updated_at=topic.updated_at,
        retention_seconds=topic.retention_seconds,
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=documented(409))
def create_topic(body: TopicIn, service: ServiceDep) -> TopicOut:
    """Create a topic; a name already taken is 409."""
    topic = service.create_topic(name=body.name)
    if body.retention_seconds is not None:
        topic = service.set_retention(topic_id=topic.id, seconds=body.retention_seconds)
    return topic_out(topic)


@router.get("")
def list_topics(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TopicList:
    """Topics in creation order, paged by cursor."""
    page = service.list_topics(limit=limit, cursor=cursor)
    return TopicList(data=[topic_out(t) for t in page.items], next_cursor=page.next_cursor)


@router.get("/{topic_id}", responses=documented(404))
def get_topic(topic_id: TopicId, service: ServiceDep) -> TopicOut:
    return topic_out(service.get_topic(topic_id=topic_id))


@router.put("/{topic_id}", responses=documented(404, 409))
def update_topic(topic_id: TopicId, body: TopicUpdate, service: ServiceDep) -> TopicOut:
    """Rename a topic and/or set its retention (`null`: keep its messages forever)."""
    given = body.model_fields_set
    if not given & {"name", "retention_seconds"}:
        raise InvalidRequest("give name and/or retention_seconds", field="name")
    if "name" in given and body.name is None:
        raise InvalidRequest("name cannot be null", field="name")
    topic = None if body.name is None else service.rename_topic(topic_id=topic_id, name=body.name)
    if topic is None or "retention_seconds" in given:
        topic = service.set_retention(topic_id=topic_id, seconds=body.retention_seconds)
    return topic_out(topic)


@router.delete("/{topic_id}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404))
def delete_topic(topic_id: TopicId, service: ServiceDep) -> Response:
    """Delete a topic and its stored messages."""
    service.delete_topic(topic_id=topic_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
