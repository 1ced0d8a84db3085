"""Create and delete the JetStream streams latam uses; publish as a plain producer would."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from nats.js.api import RetentionPolicy, StorageType
from nats.js.errors import APIError, NotFoundError

from latam.broker.base import DeliveryPolicy
from latam.broker.nats.config import NatsConfig, parse_nats_url
from latam.broker.nats.link import NatsLink

log = logging.getLogger("latam")

# JetStream's own default duplicate window, in seconds.
DEFAULT_DUPLICATE_WINDOW = 120.0


def dead_letter_window(policy: DeliveryPolicy) -> float:
    """How long the dead-letter stream remembers a copy's ``Nats-Msg-Id``: as long as the
    original can still come back. A message set aside from a batch comes back with its
    batch each time another message of it is handed back, up to the policy's attempts,
    each at most a backoff or an ack wait (doubled, for waits extended while the worker
    was busy) after the one before; JetStream's default of 2 minutes is shorter than that
    with the default policy's worst case."""
    per_attempt = policy.backoff_max_seconds + 2 * policy.ack_deadline_seconds
    return max(
        DEFAULT_DUPLICATE_WINDOW,
        policy.max_delivery_attempts * per_attempt + DEFAULT_DUPLICATE_WINDOW,
    )


async def ensure_streams(
    js: Any,
    config: NatsConfig,
    replicas: int = 1,
    dead_letter_dedupe: float = DEFAULT_DUPLICATE_WINDOW,
) -> None:
    """Create the work stream and the dead-letter stream if they do not exist, and widen
    an existing dead-letter stream's duplicate window to ``dead_letter_dedupe`` seconds."""
    wanted: dict[str, dict[str, Any]] = {
        config.stream: {
            "subjects": [config.subject, f"{config.subject}.>"],
            "retention": RetentionPolicy.WORK_QUEUE,
        },
        config.dead_letter_stream: {
            "subjects": [config.dead_letter_stream],
            "duplicate_window": dead_letter_dedupe,
        },
    }
    for name, params in wanted.items():
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(
                name=name, storage=StorageType.FILE, num_replicas=replicas, **params
            )
            continue
        window = params.get("duplicate_window")
        if window is None:
            continue
        if info.config.max_age:  # JetStream refuses a window longer than the stream's age
            window = min(window, info.config.max_age)
        kept = info.config.duplicate_window or 0
        if kept < window:
            info.config.duplicate_window = window
            try:
                await js.update_stream(config=info.config)
            except APIError as exc:  # e.g. no permission: the stream works as it is
                log.warning(
                    "stream %s keeps its duplicate window of %.0f s (wanted %.0f s): %s",
                    name,
                    kept,
                    window,
                    exc.description or type(exc).__name__,
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
