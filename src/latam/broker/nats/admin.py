"""Create and delete the JetStream streams latam uses; publish as a plain producer would."""

from __future__ import annotations

import contextlib
from typing import Any

from nats.js.api import RetentionPolicy, StorageType
from nats.js.errors import NotFoundError

from latam.broker.nats.config import NatsConfig, parse_nats_url
from latam.broker.nats.link import NatsLink


async def ensure_streams(js: Any, config: NatsConfig, replicas: int = 1) -> None:
    """Create the work stream and the dead-letter stream if they do not exist."""
    wanted: dict[str, dict[str, Any]] = {
        config.stream: {
            "subjects": [config.subject, f"{config.subject}.>"],
            "retention": RetentionPolicy.WORK_QUEUE,
        },
        config.dead_letter_stream: {"subjects": [config.dead_letter_stream]},
    }
    for name, params in wanted.items():
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(
                name=name, storage=StorageType.FILE, num_replicas=replicas, **params
            )


def publish_plain(url: str, body: bytes, headers: dict[str, str]) -> None:
    """Publish as a plain NATS client would (no ``Nats-Msg-Id``); tests and tools."""
    config = parse_nats_url(url)
    link = NatsLink(config.server)

    async def go() -> None:
        js = await link.connect()
        await ensure_streams(js, config)
        await js.publish(config.subject, body, headers=headers)

    try:
        link.run(go())
    finally:
        link.close()


def delete_streams(url: str) -> None:
    """Delete the stream and its dead-letter stream (throw-away environments only)."""
    config = parse_nats_url(url)
    link = NatsLink(config.server)

    async def go() -> None:
        js = await link.connect()
        for name in (config.stream, config.dead_letter_stream):
            with contextlib.suppress(NotFoundError):  # already gone
                await js.delete_stream(name)

    try:
        link.run(go())
    finally:
        link.close()
