"""The NATS dead-letter store: the ``<STREAM>_DLQ`` stream, ids = its sequence numbers.

Each dead letter is the original body with the original attributes plus those of
``broker.letters``, as headers (``nats.headers``). Listing walks
the stream by sequence (``after`` is a sequence number); replay publishes the original
back to the work stream without ``Nats-Msg-Id`` (so JetStream's duplicate window cannot
swallow it) and deletes the dead letter; purge deletes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.js.errors import NotFoundError

from latam.broker import letters
from latam.broker.base import DeadLetter, within_bytes
from latam.broker.nats import batches
from latam.broker.nats.config import NatsConfig
from latam.broker.nats.headers import from_headers, to_headers
from latam.broker.nats.link import NatsLink
from latam.errors import NotFound


class DeadLetterStream:
    """List, inspect, replay and purge the dead-letter stream."""

    def __init__(
        self, config: NatsConfig, link: NatsLink, ready: Callable[[], Awaitable[Any]]
    ) -> None:
        self.config = config
        self._link = link
        self._ready = ready

    async def _walk(self, after: int, limit: int, max_bytes: int) -> list[Any]:
        js = await self._ready()
        found: list[Any] = []
        seq, weight = after + 1, 0
        while len(found) < limit and weight < max_bytes:
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
            # Bodies only: never more than ``within_bytes`` weighs, so it cuts, not this.
            weight += len(raw.data or b"")
            seq = raw.seq + 1
        return found

    async def _one(self, seq: int) -> Any:
        js = await self._ready()
        try:
            return await js.get_msg(self.config.dead_letter_stream, seq=seq)
        except NotFoundError as exc:
            raise NotFound(f"dead letter {seq} does not exist") from exc

    def list_letters(self, *, limit: int, after: str | None, max_bytes: int) -> list[DeadLetter]:
        start = int(after) if after and after.isdigit() else 0
        found = self._link.run(self._walk(start, limit, max_bytes))
        return within_bytes(map(_dead_letter, found), max_bytes)

    def get(self, dead_letter_id: str) -> DeadLetter:
        if not dead_letter_id.isdigit():
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return _dead_letter(self._link.run(self._one(int(dead_letter_id))))

    def replay(self, ids: Sequence[str] | None) -> int:
        async def go() -> int:
            js = await self._ready()
            replayed = 0
            for raw in await self._chosen(ids):
                attributes, _ = from_headers(raw.headers or {})
                headers = to_headers(letters.original(attributes))
                count = (raw.headers or {}).get(batches.BATCH)
                if isinstance(count, str) and batches.parse_count(count):
                    # A whole batch set aside by a worker that could not read batches (a
                    # release before them, during a rollout): back as the batch it was.
                    headers[batches.BATCH] = count
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
            return await self._walk(0, 10**9, 2**62)
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
    attributes, _ = from_headers(raw.headers or {})
    return letters.parse(str(raw.seq), raw.data or b"", attributes)
