"""Request and response bodies of the HTTP API (they also document the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from latam.domain import (
    MAX_MESSAGE_ID,
    MAX_RETENTION_SECONDS,
    MAX_TOPIC_NAME,
    MIN_RETENTION_SECONDS,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


RETENTION = Field(
    None,
    ge=MIN_RETENTION_SECONDS,
    le=MAX_RETENTION_SECONDS,
    description="Messages published longer ago than this many seconds are deleted (in"
    " batches, by the workers, within LATAM_RETENTION_INTERVAL_SECONDS); null keeps them.",
    examples=[2_592_000],
)


class TopicIn(Strict):
    name: str = Field(min_length=1, max_length=MAX_TOPIC_NAME, examples=["flights"])
    retention_seconds: int | None = RETENTION


class TopicUpdate(Strict):
    """A rename, a retention, or both; a field left out is unchanged."""

    name: str | None = Field(None, min_length=1, max_length=MAX_TOPIC_NAME)
    retention_seconds: int | None = RETENTION


class TopicOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    retention_seconds: int | None = None


class TopicList(BaseModel):
    data: list[TopicOut]
    next_cursor: str | None


class MessageIn(Strict):
    data: dict[str, Any] = Field(description="The message: any JSON object.")
    attributes: dict[str, str] = Field(default_factory=dict, description="String metadata.")
    id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_MESSAGE_ID,
        description="Idempotency key: the same id is stored once. Generated when absent.",
    )


class BatchIn(Strict):
    messages: list[MessageIn] = Field(min_length=1, max_length=1000)


class PublishOut(BaseModel):
    message_ids: list[str]


class MessageOut(BaseModel):
    id: str
    data: dict[str, Any]
    attributes: dict[str, str]
    published_at: datetime
    ingested_at: datetime
    schema_version: int | None = Field(
        None,
        description="The version of the topic's JSON Schema the data was validated against;"
        " null when the topic enforced none.",
    )


class MessageList(BaseModel):
    data: list[MessageOut]
    next_cursor: str | None = Field(description="the next page; null on the last page")
    tail_cursor: str | None = Field(
        description="resume here later to read only newer messages (a live tail); the"
        " request's cursor when the page is empty"
    )


class DeadLetterOut(BaseModel):
    id: str
    topic: str
    message_id: str
    reason: str
    delivery_attempts: int
    published_at: datetime
    dead_lettered_at: datetime
    attributes: dict[str, str]
    data: Any | None = Field(None, description="The body when it is valid JSON.")
    body_base64: str | None = Field(None, description="The raw body when it is not JSON.")
    schema_version: int | None = Field(
        None, description="For a `schema_violation`: the version of the schema it failed."
    )
    errors: list[dict[str, str]] | None = Field(
        None,
        description="For a `schema_violation`: each failure as `{pointer, message}`, the"
        " pointer (RFC 6901) into the message's data.",
    )


class DeadLetterList(BaseModel):
    data: list[DeadLetterOut]
    next_cursor: str | None


class ReplayIn(Strict):
    ids: list[str] | None = Field(None, description="Dead letters to act on; all when absent.")


class CorrectedIn(Strict):
    data: dict[str, Any] | None = Field(
        None, description="The corrected message data (any JSON object); else the letter's."
    )
    attributes: dict[str, str] | None = Field(
        None, description="The corrected user attributes; else the letter's."
    )


class Replayed(BaseModel):
    replayed: int
    message_id: str | None = Field(None, description="The id a corrected message went under.")


class DeadLetterSummary(BaseModel):
    total: int
    by_reason: dict[str, int]
    by_topic: dict[str, int]
    complete: bool = Field(description="False when the count stopped at 100,000 letters.")


class Purged(BaseModel):
    purged: int


class Readiness(BaseModel):
    status: str
    checks: dict[str, bool]


class NombreIn(Strict):
    nombre: str = Field(min_length=1, max_length=MAX_TOPIC_NAME)


class NombreWithIdIn(NombreIn):
    id: int = Field(ge=1, le=2**63 - 1)


class NombreOut(BaseModel):
    id: int
    nombre: str


class NombreList(BaseModel):
    data: list[tuple[int, str]]
