"""Publishing to Pub/Sub in ordered ``Publish`` RPCs within the size limits.

latam sends attributes as a map in the GAPIC ``Publish`` RPC rather than through
``PublisherClient.publish(topic, data, **attributes)``: its envelope's ``topic``
attribute would collide with that method's ``topic`` parameter. (Foreign producers on
the high-level client send ``latam_topic`` instead, see docs/brokers.md.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from google.api_core import exceptions as google_errors
from google.pubsub_v1 import PublisherClient as GapicPublisher

from latam.errors import BrokerUnavailable, InvalidMessage

RPC_TIMEOUT_SECONDS = 30.0  # bound on one publish, ack or admin call


def publish_rpc(
    publisher: Any, topic_path: str, wire: Sequence[dict[str, Any]], limits: tuple[int, int]
) -> list[str]:
    """Publish in order, in RPCs within the size limits; returns the Pub/Sub message ids."""
    max_messages, max_bytes = limits
    ids: list[str] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in [*wire, None]:
        item_size = (
            0
            if item is None
            else len(item["data"])
            + 64
            + sum(len(k) + len(v) for k, v in item["attributes"].items())
        )
        if chunk and (item is None or len(chunk) >= max_messages or size + item_size > max_bytes):
            try:
                # The GAPIC method: one Publish RPC with attributes given as a map.
                response = GapicPublisher.publish(
                    publisher,
                    topic=topic_path,
                    messages=cast(Any, chunk),
                    timeout=RPC_TIMEOUT_SECONDS,
                )
            except google_errors.InvalidArgument as exc:
                # Retrying the same messages cannot succeed: the request is the problem.
                raise InvalidMessage(
                    f"Pub/Sub refused the messages: {exc.message}", reason="broker_rejected"
                ) from exc
            except google_errors.GoogleAPIError as exc:
                raise BrokerUnavailable(f"Pub/Sub publish failed: {type(exc).__name__}") from exc
            ids.extend(response.message_ids)
            chunk, size = [], 0
        if item is not None:
            chunk.append(item)
            size += item_size
    return ids
