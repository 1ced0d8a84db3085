"""Data contract endpoints: a topic's JSON Schema, versioned (/v1/topics/{id}/schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from latam.api.deps import ServiceDep, TopicId, audit, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse
from latam.domain import isoformat
from latam.storage.port import SchemaVersion

router = APIRouter(
    prefix="/v1/topics",
    tags=["schemas"],
    dependencies=[Depends(authorize("read", "admin"))],
)
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


class SchemaIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    document: dict[str, Any] | bool = Field(
        alias="schema",
        description="A JSON Schema, draft 2020-12, for the `data` of every message.",
        examples=[{"type": "object", "required": ["flight"]}],
    )
    compatibility: Literal["backward", "none"] = Field(
        "backward",
        description="`backward`: refused (409) if it would reject data valid under the"
        " latest version; `none`: accepted as it is.",
    )


class SchemaOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    version: int
    document: dict[str, Any] | bool = Field(alias="schema")
    compatibility: str
    created_at: datetime
    current: bool = Field(description="Whether the topic enforces this version now.")


class SchemaList(BaseModel):
    data: list[SchemaOut]


def schema_json(found: SchemaVersion) -> dict[str, Any]:
    return {
        "version": found.version,
        "schema": orjson.Fragment(found.schema),  # stored as compact JSON text
        "compatibility": found.compatibility,
        "created_at": isoformat(found.created_at),
        "current": found.current,
    }


@router.put("/{topic_id}/schema", response_model=SchemaOut, responses=documented(404, 409, 422))
def put_schema(
    topic_id: TopicId, body: SchemaIn, request: Request, service: ServiceDep
) -> Response:
    """Add a version of the topic's schema and enforce it from now on (in every API and
    worker process within a second). Publishing data that fails it is then a 422, and a
    direct producer's message that fails it a `schema_violation` dead letter. The same
    schema as the current version changes nothing."""
    found = service.put_schema(
        topic_id=topic_id, schema=body.document, compatibility=body.compatibility
    )
    audit(request, "schema set", topic_id=topic_id, version=found.version)
    return OrjsonResponse(schema_json(found))


@router.get("/{topic_id}/schema", response_model=SchemaOut, responses=documented(404))
def get_schema(topic_id: TopicId, service: ServiceDep) -> Response:
    """The version the topic enforces; 404 when it enforces none."""
    return OrjsonResponse(schema_json(service.current_schema(topic_id=topic_id)))


@router.get("/{topic_id}/schema/versions", response_model=SchemaList, responses=documented(404))
def list_versions(topic_id: TopicId, service: ServiceDep) -> Response:
    """Every version the topic's schema has had, oldest first."""
    found = service.schema_versions(topic_id=topic_id)
    return OrjsonResponse({"data": [schema_json(v) for v in found]})


@router.get(
    "/{topic_id}/schema/versions/{version}", response_model=SchemaOut, responses=documented(404)
)
def get_version(topic_id: TopicId, version: Version, service: ServiceDep) -> Response:
    return OrjsonResponse(schema_json(service.schema_version(topic_id=topic_id, version=version)))


@router.delete(
    "/{topic_id}/schema", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404)
)
def delete_schema(topic_id: TopicId, request: Request, service: ServiceDep) -> Response:
    """Stop enforcing a schema. Its versions are kept; stored messages are unchanged."""
    service.drop_schema(topic_id=topic_id)
    audit(request, "schema dropped", topic_id=topic_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
