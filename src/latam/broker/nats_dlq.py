"""The NATS dead-letter store: the ``<STREAM>_DLQ`` stream, ids = its sequence numbers.

Each dead letter is the original body with the original headers plus ``reason``,
``delivery_attempts``, ``source_published_at`` and ``dead_lettered_at``. Listing walks
the stream by sequence (``after`` is a sequence number); replay publishes the original
back to the work stream without ``Nats-Msg-Id`` (so JetStream's duplicate window cannot
swallow it) and deletes the dead letter; purge deletes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from nats.js.errors import NotFoundError

from latam.broker.base import DeadLetter, Delivery
from latam.broker.nats_link import NatsConfig, NatsLink
from latam.domain import ATTR_MESSAGE_ID, ATTR_TOPIC, isoformat, parse_timestamp
from latam.errors import NotFound

REASON = "reason"
ATTEMPTS = "delivery_attempts"
SOURCE_TIME = "source_published_at"
DEAD_AT = "dead_lettered_at"
META = frozenset({REASON, ATTEMPTS, SOURCE_TIME, DEAD_AT})


def dead_letter_headers(delivery: Delivery, reason: str, attempts: int) -> dict[str, str]:
    """The headers of a dead-letter copy of ``delivery``."""
    return {
        **delivery.attributes,
        REASON: reason[:1000],
        ATTEMPTS: str(attempts),
        SOURCE_TIME: isoformat(delivery.published_at),
        DEAD_AT: isoformat(datetime.now(UTC)),
    }


class DeadLetterStream:
    """List, inspect, replay and purge the dead-letter stream."""

    def __init__(
        self, config: NatsConfig, link: NatsLink, ready: Callable[[], Awaitable[Any]]
    ) -> None:
        self.config = config
        self._link = link
        self._ready = ready

    async def _walk(self, after: int, limit: int) -> list[Any]:
        js = await self._ready()
        found: list[Any] = []
        seq = after + 1
        while len(found) < limit:
            try:
                raw = await js.get_msg(
                    self.config.dead_letter_stream,
                    seq=seq,
                    subject=self.config.dead_letter_stream,
                    next=True,
                )
            except NotFoundError:
                break
            found.append(raw)
            seq = raw.seq + 1
        return found

    async def _one(self, seq: int) -> Any:
        js = await self._ready()
        try:
            return await js.get_msg(self.config.dead_letter_stream, seq=seq)
        except NotFoundError as exc:
            raise NotFound(f"dead letter {seq} does not exist") from exc

    def list_letters(self, *, limit: int, after: str | None) -> list[DeadLetter]:
        start = int(after) if after and after.isdigit() else 0
        return [_dead_letter(raw) for raw in self._link.run(self._walk(start, limit))]

    def get(self, dead_letter_id: str) -> DeadLetter:
        if not dead_letter_id.isdigit():
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return _dead_letter(self._link.run(self._one(int(dead_letter_id))))

    def replay(self, ids: Sequence[str] | None) -> int:
        async def go() -> int:
            js = await self._ready()
            replayed = 0
            for raw in await self._chosen(ids):
                headers = {k: v for k, v in (raw.headers or {}).items() if k not in META}
                await js.publish(self.config.subject, raw.data or b"", headers=headers)
                replayed += await self._delete(js, raw.seq)
            return replayed

        return self._link.run(go(), timeout=300)

    def purge(self, ids: Sequence[str] | None) -> int:
        async def go() -> int:
            js = await self._ready()
            if ids is None:
                info = await js.stream_info(self.config.dead_letter_stream)
                await js.purge_stream(self.config.dead_letter_stream)
                return int(info.state.messages)
            deleted = 0
            for raw in await self._chosen(ids):
                deleted += await self._delete(js, raw.seq)
            return deleted

        return self._link.run(go(), timeout=300)

    def count(self) -> int:
        async def go() -> int:
            js = await self._ready()
            return int((await js.stream_info(self.config.dead_letter_stream)).state.messages)

        return self._link.run(go())

    async def _chosen(self, ids: Sequence[str] | None) -> list[Any]:
        if ids is None:
            return await self._walk(0, 10**9)
        chosen = []
        for seq in sorted({int(i) for i in ids if i.isdigit()}):
            try:
                chosen.append(await self._one(seq))
            except NotFound:
                continue
        return chosen

    async def _delete(self, js: Any, seq: int) -> int:
        try:
            return 1 if await js.delete_msg(self.config.dead_letter_stream, seq) else 0
        except NotFoundError:
            return 0


def _dead_letter(raw: Any) -> DeadLetter:
    headers: dict[str, str] = dict(raw.headers or {})
    original = {k: v for k, v in headers.items() if k not in META and not k.startswith("Nats-")}
    dead_at = _time(headers.get(DEAD_AT, ""), datetime.now(UTC))
    attempts = headers.get(ATTEMPTS, "0")
    return DeadLetter(
        id=str(raw.seq),
        topic=original.get(ATTR_TOPIC, ""),
        message_id=original.get(ATTR_MESSAGE_ID, ""),
        body=bytes(raw.data or b""),
        attributes=original,
        reason=headers.get(REASON, "unknown"),
        delivery_attempts=int(attempts) if attempts.isdigit() else 0,
        published_at=_time(headers.get(SOURCE_TIME, ""), dead_at),
        dead_lettered_at=dead_at,
    )


def _time(value: str, fallback: datetime) -> datetime:
    try:
        return parse_timestamp(value) if value else fallback
    except ValueError:
        return fallback
