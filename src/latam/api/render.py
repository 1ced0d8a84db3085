"""Fast JSON rendering of read responses: stored JSON text is spliced, never re-parsed."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.responses import Response

from latam.broker.base import DeadLetter
from latam.domain import isoformat
from latam.jsonschemas import VIOLATION, parse_violation
from latam.storage.port import message_json

__all__ = ["OrjsonResponse", "dead_letter_json", "message_json"]


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


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
    if (violation := parse_violation(letter.reason)) is not None:
        body["reason"] = VIOLATION
        body["schema_version"], body["errors"] = violation
    try:
        body["data"] = orjson.loads(letter.body)
    except orjson.JSONDecodeError:
        body["body_base64"] = base64.b64encode(letter.body).decode()
    return body
