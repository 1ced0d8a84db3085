"""Broker adapter on Google Cloud Pub/Sub: streaming (or unary) pull in, publish RPCs out.

Consuming uses the client library's streaming pull by default (``pubsub_unary`` has the
synchronous alternative). Its callback only appends the message to an internal queue
that ``pull()`` drains, so the worker keeps its batch shape;
``FlowControl(max_messages, max_bytes)`` bounds what is leased and not yet settled.
Leases are extended by the library for at most the ack deadline, after which an
unsettled message expires and Pub/Sub redelivers it, as the port requires.

Publishing sends the port's batch as ``Publish`` RPCs of at most
``publish_batch_messages`` messages / ``publish_batch_bytes`` bytes each, one after the
other (``pubsub_publish``): a call returns once every RPC answered (so an accepted
message is durable) and the messages reach Pub/Sub in the order given.

Delivery attempts come from Pub/Sub when the subscription has a dead-letter policy; when
it reports none (no policy, or the emulator) this client counts the deliveries it saw.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from latam.broker.base import REASON_MAX_ATTEMPTS, Backlog, DeadLetter, Delivery, DeliveryPolicy
from latam.broker.pubsub_config import PubsubConfig
from latam.broker.pubsub_dlq import (
    ATTR_ATTEMPTS,
    ATTR_DEAD_AT,
    ATTR_REASON,
    ATTR_SOURCE_TIME,
    DeadLetterStore,
)
from latam.broker.pubsub_publish import publish_rpc
from latam.broker.pubsub_unary import UnaryPuller
from latam.domain import OutboundMessage, isoformat
from latam.errors import BrokerUnavailable

MAX_COUNTED_MESSAGES = 100_000  # local delivery counters kept when Pub/Sub reports none
MIN_ACK_DEADLINE_SECONDS = 10  # Pub/Sub's floor for ack deadlines and lease extensions
MAX_LEASE_SECONDS = 3600  # how long a message may wait in this process before it lapses


class PubsubBroker:
    """Broker adapter on a Pub/Sub topic and its pull subscription."""

    name = "pubsub"

    def __init__(
        self,
        config: PubsubConfig,
        policy: DeliveryPolicy,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        publish_batch_messages: int = 1000,
        publish_batch_bytes: int = 9 * 1024 * 1024,
        pull_mode: str = "streaming",
    ) -> None:
        self.config = config
        self.pull_mode = pull_mode
        self.policy = policy
        self._max_bytes = max_bytes
        self._batch_messages = publish_batch_messages
        self._batch_bytes = publish_batch_bytes
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held: dict[str, Any] = {}  # handle -> library message, until settled
        self._handed: dict[str, float] = {}  # handle -> when pull() handed it out
        self._seen: OrderedDict[str, int] = OrderedDict()  # message id -> deliveries
        self._stream: Any = None
        self._publisher: Any = None
        self._subscriber: Any = None
        self._store: DeadLetterStore | None = None
        self._puller: UnaryPuller | None = None

    # -- clients ------------------------------------------------------------------------
    def _clients(self) -> tuple[Any, Any]:
        with self._lock:
            if self._publisher is None:
                self._publisher = pubsub_v1.PublisherClient()
                self._subscriber = pubsub_v1.SubscriberClient()
            return self._publisher, self._subscriber

    @property
    def dead_letters(self) -> DeadLetterStore:
        if self._store is None:
            publisher, subscriber = self._clients()
            self._store = DeadLetterStore(self.config, publisher, subscriber)
        return self._store

    # -- producer -----------------------------------------------------------------------
    def publish(self, messages: Sequence[OutboundMessage]) -> None:
        wire = [{"data": m.body, "attributes": m.wire_attributes()} for m in messages]
        publish_rpc(self._clients()[0], self.config.topic_path, wire, self._chunk_limits)

    @property
    def _chunk_limits(self) -> tuple[int, int]:
        return self._batch_messages, self._batch_bytes

    # -- consumer -----------------------------------------------------------------------
    def _ensure_stream(self) -> None:
        with self._lock:
            if self._stream is not None and not self._stream.done():
                return
            failed = self._stream
            self._stream = None
        if failed is not None:
            self._raise_stream_error(failed)
        _, subscriber = self._clients()
        deadline = max(int(self.policy.ack_deadline_seconds), MIN_ACK_DEADLINE_SECONDS)
        flow = pubsub_v1.types.FlowControl(
            max_messages=self.policy.max_in_flight,
            max_bytes=self._max_bytes,
            # The library keeps extending leases while messages wait in this process;
            # a message handed to the worker and left unsettled past the ack deadline is
            # nacked by ``_expire`` instead. Letting leases lapse would rely on the server
            # redelivering expired messages on a live stream, which the emulator does not.
            max_lease_duration=MAX_LEASE_SECONDS,
            min_duration_per_lease_extension=deadline,
            max_duration_per_lease_extension=deadline,
        )
        # One callback thread keeps the queue in the order Pub/Sub delivered.
        scheduler = ThreadScheduler(executor=ThreadPoolExecutor(max_workers=1))
        stream = subscriber.subscribe(
            self.config.subscription_path, self._queue.put, flow_control=flow, scheduler=scheduler
        )
        with self._lock:
            self._stream = stream

    @staticmethod
    def _raise_stream_error(stream: Any) -> None:
        try:
            error = stream.exception(timeout=0)
        except Exception as exc:  # cancelled or still pending: nothing to report
            error = exc
        raise BrokerUnavailable(f"Pub/Sub streaming pull stopped: {type(error).__name__}")

    def pull(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        if self.pull_mode == "unary":
            return self._pull_unary(max_messages, timeout)
        self._ensure_stream()
        self._expire()
        deliveries: list[Delivery] = []
        try:
            message = self._queue.get(timeout=max(timeout, 0.0))
            while True:
                if (delivery := self._accept(message)) is not None:
                    deliveries.append(delivery)
                if len(deliveries) >= max_messages:
                    break
                message = self._queue.get_nowait()
        except queue.Empty:
            pass
        return deliveries

    def _pull_unary(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._puller is None:
            self._puller = UnaryPuller(self._clients()[1], self.config.subscription_path)
        self._expire()
        room = min(max_messages, self.policy.max_in_flight - len(self._held))
        if room <= 0:  # flow control: nothing more is leased until the worker settles
            time.sleep(max(timeout, 0.0))
            return []
        accepted = (self._accept(m) for m in self._puller.pull(room, timeout))
        return [delivery for delivery in accepted if delivery is not None]

    def _accept(self, message: Any) -> Delivery | None:
        attempt = self._count(message)
        handle = f"{message.message_id}:{message.ack_id[-24:]}:{attempt}"
        delivery = Delivery(
            handle=handle,
            broker_message_id=str(message.message_id),
            body=bytes(message.data),
            attributes=dict(message.attributes),
            published_at=message.publish_time.astimezone(UTC),
            delivery_attempt=attempt,
        )
        self._held[handle] = message
        self._handed[handle] = time.monotonic()
        if attempt > self.policy.max_delivery_attempts:
            # Deliveries whose leases kept expiring: dead-letter like the other adapters.
            reason = f"{REASON_MAX_ATTEMPTS}: ack deadline expired"
            self.dead_letter([delivery], reason=reason, attempts=attempt - 1)
            return None
        return delivery

    def _count(self, message: Any) -> int:
        with self._lock:
            seen = self._seen.pop(message.message_id, 0) + 1
            self._seen[message.message_id] = seen
            while len(self._seen) > MAX_COUNTED_MESSAGES:
                self._seen.popitem(last=False)
        return int(message.delivery_attempt or seen)

    def _expire(self) -> None:
        """Nack what the worker held past the ack deadline, so Pub/Sub redelivers it."""
        cutoff = time.monotonic() - max(self.policy.ack_deadline_seconds, MIN_ACK_DEADLINE_SECONDS)
        expired = []
        for handle in [h for h, since in list(self._handed.items()) if since < cutoff]:
            self._handed.pop(handle, None)
            if (message := self._held.pop(handle, None)) is not None:
                expired.append(message)
        self._release(expired)

    def _take(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, Any]]:
        for delivery in deliveries:
            self._handed.pop(delivery.handle, None)
        taken = [(d, self._held.pop(d.handle, None)) for d in deliveries]
        with self._lock:
            for delivery, _ in taken:
                self._seen.pop(delivery.broker_message_id, None)
        return [(d, m) for d, m in taken if m is not None]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        messages = [message for _delivery, message in self._take(deliveries)]
        if self._puller is not None:
            self._puller.ack(messages)
            return
        for message in messages:
            message.ack()

    def _release(self, messages: Sequence[Any]) -> None:
        """Hand messages back for redelivery (nack), without settling anything else."""
        if self._puller is not None:
            self._puller.release(messages)
            return
        for message in messages:
            message.nack()

    def nack(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        exhausted = [
            d for d in deliveries if d.delivery_attempt >= self.policy.max_delivery_attempts
        ]
        if exhausted:
            self.dead_letter(exhausted, reason=f"{REASON_MAX_ATTEMPTS}: {reason}")
        # The subscription's retry policy spaces the redelivery (min/max backoff).
        returned = []
        for delivery in deliveries:
            self._handed.pop(delivery.handle, None)
            if delivery not in exhausted and (message := self._held.pop(delivery.handle, None)):
                returned.append(message)
        if self._puller is not None:
            self._puller.nack(returned)
        else:
            self._release(returned)

    def dead_letter(
        self, deliveries: Sequence[Delivery], *, reason: str, attempts: int | None = None
    ) -> None:
        now = isoformat(datetime.now(UTC))
        wire: list[dict[str, Any]] = [
            {
                "data": delivery.body,
                "attributes": dict(delivery.attributes)
                | {
                    ATTR_REASON: reason[:1000],
                    ATTR_ATTEMPTS: str(attempts or delivery.delivery_attempt),
                    ATTR_SOURCE_TIME: isoformat(delivery.published_at),
                    ATTR_DEAD_AT: now,
                },
            }
            for delivery in deliveries
        ]
        topic = self.config.dead_letter_topic_path
        publish_rpc(self._clients()[0], topic, wire, self._chunk_limits)
        self.ack(deliveries)

    # -- dead letters -------------------------------------------------------------------
    def list_dead_letters(self, *, limit: int, after: str | None = None) -> list[DeadLetter]:
        return self.dead_letters.list_letters(limit=limit, after=after)

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return self.dead_letters.get(dead_letter_id)

    def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        return self.dead_letters.replay(ids, self.config.topic_path)

    def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        return self.dead_letters.purge(ids)

    # -- health -------------------------------------------------------------------------
    def backlog(self) -> Backlog | None:
        """Pub/Sub reports backlog through Cloud Monitoring (num_undelivered_messages)."""
        return None

    def dead_letter_count(self) -> int | None:
        """Counting would mean pulling the whole dead-letter subscription; not cheap."""
        return None

    def ping(self) -> None:
        publisher, _ = self._clients()
        try:
            publisher.get_topic(topic=self.config.topic_path, timeout=5)
        except google_errors.GoogleAPIError as exc:
            raise BrokerUnavailable(f"Pub/Sub topic check failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()  # the library nacks what it still holds
            # A cancelled stream reports its cancellation as an exception.
            with contextlib.suppress(Exception):
                stream.result(timeout=10)
        while True:  # hand back what the worker never pulled, for a prompt redelivery
            try:
                self._queue.get_nowait().nack()
            except queue.Empty:
                break
        if self._puller is not None:  # and, on unary pull, what it pulled and never settled
            self._release(list(self._held.values()))
            self._held.clear()
        if self._subscriber is not None:
            self._subscriber.close()
        if self._publisher is not None:
            self._publisher.stop()
