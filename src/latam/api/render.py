"""Fast JSON rendering of read responses: stored JSON text is spliced, never re-parsed."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.responses import Response

from latam.broker.base import DeadLetter
from latam.domain import isoformat
from latam.storage.port import StoredMessage


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def message_json(message: StoredMessage) -> dict[str, Any]:
    return {
        "id": message.message_id,
        "data": orjson.Fragment(message.data),
        "attributes": orjson.Fragment(message.attributes),
        "published_at": isoformat(message.published_at),
        "ingested_at": isoformat(message.ingested_at),
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": letter.id,
        "topic": letter.topic,
        "message_id": letter.message_id,
        "reason": letter.reason,
        "delivery_attempts": letter.delivery_attempts,
        "published_at": isoformat(letter.published_at),
        "dead_lettered_at": isoformat(letter.dead_lettered_at),
        "attributes": dict(letter.attributes),
        "data": None,
        "body_base64": None,
    }
    try:
        body["data"] = orjson.loads(letter.body)
    except orjson.JSONDecodeError:
        body["body_base64"] = base64.b64encode(letter.body).decode()
    return body
