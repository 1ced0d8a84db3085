"""Broker adapter on NATS JetStream: a work-queue stream and one durable pull consumer.

Subjects: the stream ``STREAM`` captures ``STREAM`` (where latam publishes) and
``STREAM.>``; a producer sets the ``topic`` header, or publishes to ``STREAM.<topic>``
and the subject's last part stands in for a missing header. Headers carry the latam
attributes (``topic``, ``message_id``, ``published_at`` and the user's ones), one each,
or all of them in one JSON header when any cannot be a header as it is
(``nats.headers``);
``Nats-Msg-Id`` built from the topic and the message id lets JetStream drop re-publishes
inside its duplicate window, and only those. A publish of several messages goes out as
batches instead, several messages to a NATS message (``nats.batches``); the worker reads
both forms.

The consumer's ``ack_wait`` is the ack deadline and ``max_ack_pending`` the flow-control
bound. Delivery attempts come from JetStream's ``num_delivered``; ``max_deliver`` is
unlimited, so that the worker, which enforces the attempt limit, copies an exhausted
message into the ``<STREAM>_DLQ`` stream with its reason before it is terminated.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from latam.broker import letters
from latam.broker.base import (
    Backlog,
    DeadLettersIn,
    Delivery,
    DeliveryPolicy,
    read_attributes,
)
from latam.broker.nats import batches
from latam.broker.nats.admin import dead_letter_window, ensure_streams
from latam.broker.nats.config import NatsConfig
from latam.broker.nats.dead_letters import DeadLetterStream
from latam.broker.nats.headers import from_headers, to_headers
from latam.broker.nats.link import NatsLink
from latam.domain import ATTR_TOPIC, OutboundMessage

MSG_ID = "Nats-Msg-Id"
# Seconds a publish waits for its acknowledgements.
PUBLISH_WAIT = 10.0
# Reads of the stream's state for one backlog answer, while acks remove its first message.
BACKLOG_TRIES = 5
# NATS messages one fetch asks for at most: the worker holds a fetch whole until it hands
# every message of it out, so this bounds it to MAX_FETCH times the server's max_payload.
MAX_FETCH = 16


def dedupe_id(topic: str, message_id: str) -> str:
    """``Nats-Msg-Id``: identity is (topic, message id), as in the store's key, so the
    same id in two topics is two messages. Length-prefixed, so no topic/id pair can
    spell another pair's key."""
    return f"{len(topic)}:{topic}:{message_id}"


class NatsBroker(DeadLettersIn):
    """Broker adapter on a JetStream stream (``nats://HOST:PORT/STREAM``)."""

    name = "nats"

    def __init__(self, config: NatsConfig, policy: DeliveryPolicy, *, replicas: int = 1) -> None:
        self.config = config
        self.policy = policy
        self.replicas = replicas
        self._link = NatsLink(config.server)
        self._psub: Any = None
        self._held: dict[str, Any] = {}  # handle -> NATS message or _Batch, until settled
        self._waiting: deque[tuple[Delivery, Any]] = deque()  # fetched, not handed out
        # Messages of the largest NATS message of the last fetch; before any, a batch's
        # most, so that a first fetch into a backlog of batches takes one.
        self._per_message = batches.MAX_MEMBERS
        self._fetched_at = 0.0  # when the messages in _waiting were fetched
        self._dead_letters = DeadLetterStream(config, self._link, self._ready)

    async def _ready(self) -> Any:
        """The JetStream context once the streams and the consumer exist."""
        js = await self._link.connect()
        if self._psub is None:
            await ensure_streams(js, self.config, self.replicas, dead_letter_window(self.policy))
            await js.add_consumer(
                self.config.stream,
                ConsumerConfig(
                    durable_name=self.config.consumer,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.policy.ack_deadline_seconds,
                    max_deliver=-1,
                    max_ack_pending=self.policy.max_in_flight,
                ),
            )
            self._psub = await js.pull_subscribe_bind(
                durable=self.config.consumer, stream=self.config.stream
            )
        return js

    # -- producer -----------------------------------------------------------------------
    def publish(self, messages: Sequence[OutboundMessage]) -> None:
        async def go() -> None:
            js = await self._ready()
            # Sent back to back in order on one connection (the stream keeps the given
            # order), each with its own reply subject; then all acknowledgements awaited
            # together. ``js.publish`` would be a request, with its own timer, per message.
            acks = []
            try:
                limit = self._link.max_payload - batches.HEADROOM
                for group in batches.chunks(messages, limit):
                    subject, body, headers = self._wire(group)
                    # No wait_stall: with one, every call starts a timer task. Room comes
                    # back as other publishes are answered or, unanswered, time out.
                    acks.append(await js.publish_async(subject, body, headers=headers))
                await asyncio.wait_for(asyncio.gather(*acks), timeout=PUBLISH_WAIT)
            finally:
                for ack in acks:  # unanswered ones give their place back
                    ack.cancel()

        self._link.run(go())

    def _wire(
        self, group: list[tuple[OutboundMessage, bytes]]
    ) -> tuple[str, bytes, dict[str, str]]:
        """Subject, body and headers of one NATS message: a message alone as a plain
        producer would send it, several as a batch (``nats.batches``)."""
        if len(group) == 1:
            message = group[0][0]
            headers = to_headers(message.wire_attributes())
            headers[MSG_ID] = dedupe_id(message.topic, message.message_id)
            return self.config.subject, message.body, headers
        ids = [dedupe_id(m.topic, m.message_id) for m, _ in group]
        headers = {batches.BATCH: str(len(group)), MSG_ID: batches.dedupe_id(ids)}
        body = b"".join(frame for _, frame in group)
        return batches.subject(self.config.subject, len(group)), body, headers

    # -- consumer -----------------------------------------------------------------------
    def pull(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        if self._waiting:
            self._keep_waiting()
        room = min(max_messages, self.policy.max_in_flight - len(self._held))
        if room <= 0:
            self._link.run(asyncio.sleep(timeout))
            return []
        if not self._waiting:
            # Enough NATS messages for ``room`` messages by the largest batch of the last
            # fetch, and never more than MAX_FETCH: a fetch is held whole, whatever the
            # NATS messages turn out to hold (at most MAX_FETCH times ``max_payload``).
            wanted = max(1, min(room // self._per_message, MAX_FETCH))

            async def go() -> list[Any]:
                await self._ready()
                try:
                    return list(await self._psub.fetch(batch=wanted, timeout=max(timeout, 0.05)))
                except (NatsTimeout, TimeoutError):
                    # An empty fetch; under load nats-py may surface asyncio's own timeout.
                    return []

            fetched = self._link.run(go(), timeout=timeout + 30)
            self._fetched_at = time.monotonic()
            sizes = [0]
            for msg in fetched:
                unpacked = self._unpack(msg)
                self._waiting.extend(unpacked)
                sizes.append(len(unpacked))
            if fetched:
                self._per_message = max(sizes)
        # Messages of a batch beyond ``room`` wait here for the next pull.
        deliveries: list[Delivery] = []
        while self._waiting and len(deliveries) < room:
            delivery, owner = self._waiting.popleft()
            self._held[delivery.handle] = owner
            deliveries.append(delivery)
        return deliveries

    def _keep_waiting(self) -> None:
        """Messages fetched but not handed out yet must not outlive their NATS message's
        ack wait while they wait (a slow store, a fetch of large batches): past a third
        of it, JetStream is told their NATS messages are still in progress."""
        if time.monotonic() - self._fetched_at < self.policy.ack_deadline_seconds / 3:
            return
        waiting = list({id(owner): owner for _, owner in self._waiting}.values())

        async def go() -> None:
            for owner in waiting:
                await (owner.msg if isinstance(owner, _Batch) else owner).in_progress()

        self._link.run(go())
        self._fetched_at = time.monotonic()

    def _unpack(self, msg: Any) -> list[tuple[Delivery, Any]]:
        """The deliveries of one NATS message, each with what settles it."""
        count = (msg.headers or {}).get(batches.BATCH)
        if count is None:
            return [(self._delivery(msg), msg)]
        members = batches.unpack(msg.data, batches.parse_count(count))
        if not members:  # a header written by hand over something else: set aside whole
            single = self._delivery(msg)
            single.defect = "invalid_body"
            return [(single, msg)]
        meta = msg.metadata
        stamp = meta.timestamp if meta.timestamp.tzinfo else meta.timestamp.replace(tzinfo=UTC)
        seq, attempt = meta.sequence.stream, int(meta.num_delivered)
        batch = _Batch(msg, len(members))
        deliveries = []
        for index, (attributes, body) in enumerate(members):
            readable, defect = read_attributes(attributes)
            delivery = Delivery(  # positional: once per message
                f"{seq}:{attempt}:{index}",
                f"{self.config.stream}-{seq}-{index}",
                body,
                readable,
                stamp,
                attempt,
                None,
                defect,
            )
            deliveries.append((delivery, batch))
        return deliveries

    def _delivery(self, msg: Any) -> Delivery:
        meta = msg.metadata
        attributes, defect = from_headers(msg.headers or {})
        suffix = msg.subject.removeprefix(self.config.stream).lstrip(".")
        if not attributes.get(ATTR_TOPIC) and suffix:
            attributes[ATTR_TOPIC] = suffix
        stamp = meta.timestamp
        return Delivery(
            handle=f"{meta.sequence.stream}:{meta.num_delivered}",
            broker_message_id=f"{self.config.stream}-{meta.sequence.stream}",
            body=bytes(msg.data),
            attributes=attributes,
            published_at=stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC),
            delivery_attempt=int(meta.num_delivered),
            defect=defect,
        )

    def _settle(
        self, deliveries: Sequence[Delivery], *, delay: float | None = None, term: bool = False
    ) -> None:
        """Settle deliveries: a plain message at once (``ack``, ``nak`` after ``delay``,
        or ``term``); a batch once every message of it is settled, ``nak``ed if any was
        handed back and acked otherwise. Acks and the rest go out back to back, without a
        reply each, and one flush (PING/PONG, answered after everything sent before it)
        confirms them. Were one lost anyway, the message would only be delivered again,
        and the store holds it already."""
        acks: list[Any] = []
        naks: list[tuple[Any, float]] = []
        terms: list[Any] = []
        for delivery in deliveries:
            owner = self._held.pop(delivery.handle, None)
            if owner is None:
                continue
            if isinstance(owner, _Batch):
                if owner.settle(delay):
                    if owner.delay is None:
                        acks.append(owner.msg)
                    else:
                        naks.append((owner.msg, owner.delay))
            elif delay is not None:
                naks.append((owner, delay))
            else:
                (terms if term else acks).append(owner)

        async def go() -> None:
            for msg in acks:
                await msg.ack()
            for msg, after in naks:
                await msg.nak(delay=after)
            for msg in terms:
                await msg.term()
            await self._link.flush(timeout=10)

        if acks or naks or terms:
            self._link.run(go())

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries)

    def nack(self, deliveries: Sequence[Delivery], *, reason: str, delay: float) -> None:
        self._settle(deliveries, delay=delay)

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        async def go() -> None:
            js = await self._ready()
            copies = [
                js.publish(
                    self.config.dead_letter_stream,
                    d.body,
                    # One dead letter per original, even if this process dies before
                    # terminating it and the next one sets it aside again.
                    headers={
                        **to_headers(letters.stamp(d, reason, d.delivery_attempt)),
                        MSG_ID: f"dead:{d.broker_message_id}",
                    },
                )
                for d in deliveries
            ]
            await asyncio.gather(*copies)

        try:
            self._link.run(go())
        except BaseException:
            # No copy, so the originals stay: let go of them and their ack_wait
            # redelivers them, instead of holding handles nobody will settle.
            for delivery in deliveries:
                self._held.pop(delivery.handle, None)
            raise
        # Only once the copy is durable is the original terminated.
        self._settle(deliveries, term=True)

    @property
    def dead_letters(self) -> DeadLetterStream:
        return self._dead_letters

    # -- health -------------------------------------------------------------------------
    def backlog(self) -> Backlog:
        """Work-queue retention keeps exactly the unacknowledged messages in the stream;
        a batch counts as the messages it holds (its subject says how many)."""
        batch_subjects = batches.every_subject(self.config.subject)

        async def go() -> tuple[int, datetime | None]:
            js = await self._ready()
            messages = 0
            for _ in range(BACKLOG_TRIES):
                info = await js.stream_info(self.config.stream, subjects_filter=batch_subjects)
                state = info.state
                messages = int(state.messages) + sum(
                    (batches.count_of(name) - 1) * int(n)
                    for name, n in (state.subjects or {}).items()
                )
                if not messages:
                    return 0, None
                # The first message still in the stream is the oldest unacknowledged one,
                # unless a consumer's ack removed it since: then the state is read again.
                try:
                    first = await js.get_msg(self.config.stream, seq=state.first_seq)
                except NotFoundError:
                    continue
                return messages, first.time
            return messages, None  # draining faster than it can be read: age unknown

        messages, first = self._link.run(go())
        age = None
        if first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=UTC)
            age = max((datetime.now(UTC) - first).total_seconds(), 0.0)
        return Backlog(messages=messages, oldest_age_seconds=age)

    def ping(self) -> None:
        async def go() -> None:
            js = await self._ready()
            await js.stream_info(self.config.stream)

        self._link.run(go(), timeout=10)

    def close(self) -> None:
        self._link.close()


@dataclass(slots=True)
class _Batch:
    """A NATS message holding several messages, until every one of them is settled."""

    msg: Any
    open: int
    delay: float | None = None  # the longest delay a message of it was handed back with

    def settle(self, delay: float | None) -> bool:
        """One message settled (handed back when ``delay`` is given); True for the last."""
        self.open -= 1
        if delay is not None:
            self.delay = max(self.delay or 0.0, delay)
        return self.open == 0
