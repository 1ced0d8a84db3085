"""Broker adapter on Google Cloud Pub/Sub: a ``Puller`` in, publish RPCs out.

Receiving is a strategy (``pullers``): streaming pull by default, unary pull with
``LATAM_PUBSUB_PULL_MODE=unary``. Whatever the puller, this adapter tracks the messages
handed to the worker, counts deliveries where Pub/Sub reports none, and nacks what the
worker held past the ack deadline so that Pub/Sub redelivers it, as the port requires.

Publishing sends the port's batch as ``Publish`` RPCs of at most
``publish_batch_messages`` messages / ``publish_batch_bytes`` bytes each, one after the
other (``publish``): a call returns once every RPC answered (so an accepted message is
durable) and the messages reach Pub/Sub in the order given.

Delivery attempts come from Pub/Sub when the subscription has a dead-letter policy; when
it reports none (no policy, or the emulator) this client counts the deliveries it saw.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from latam.broker import letters
from latam.broker.base import Backlog, DeadLettersIn, Delivery, DeliveryPolicy
from latam.broker.pubsub.config import PubsubConfig
from latam.broker.pubsub.dead_letters import DeadLetterStore
from latam.broker.pubsub.publish import publish_rpc
from latam.broker.pubsub.pullers import (
    MIN_ACK_DEADLINE_SECONDS,
    Puller,
    StreamingPuller,
    UnaryPuller,
)
from latam.domain import OutboundMessage
from latam.errors import BrokerUnavailable

MAX_COUNTED_MESSAGES = 100_000  # local delivery counters kept when Pub/Sub reports none


class PubsubBroker(DeadLettersIn):
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
        self._held: dict[str, Any] = {}  # handle -> library message, until settled
        self._handed: dict[str, float] = {}  # handle -> when pull() handed it out
        self._seen: OrderedDict[str, int] = OrderedDict()  # message id -> deliveries
        self._publisher: Any = None
        self._subscriber: Any = None
        self._store: DeadLetterStore | None = None
        self._puller: Puller | None = None

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
    def _receiver(self) -> Puller:
        with self._lock:
            if self._puller is not None:
                return self._puller
        subscriber = self._clients()[1]
        path = self.config.subscription_path
        puller: Puller = (
            UnaryPuller(subscriber, path)
            if self.pull_mode == "unary"
            else StreamingPuller(subscriber, path, self.policy, self._max_bytes)
        )
        with self._lock:
            self._puller = self._puller or puller
            return self._puller

    def pull(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        puller = self._receiver()
        self._expire()
        room = min(max_messages, self.policy.max_in_flight - len(self._held))
        if room <= 0:  # flow control: nothing more is leased until the worker settles
            time.sleep(max(timeout, 0.0))
            return []
        return [self._accept(message) for message in puller.pull(room, timeout)]

    def _accept(self, message: Any) -> Delivery:
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

    def _take(
        self, deliveries: Sequence[Delivery], *, forget: bool = True
    ) -> list[tuple[Delivery, Any]]:
        """The library messages of ``deliveries``, no longer held; ``forget`` drops their
        delivery counts too (settled for good, not handed back)."""
        for delivery in deliveries:
            self._handed.pop(delivery.handle, None)
        taken = [(d, self._held.pop(d.handle, None)) for d in deliveries]
        if forget:
            with self._lock:
                for delivery, _ in taken:
                    self._seen.pop(delivery.broker_message_id, None)
        return [(d, m) for d, m in taken if m is not None]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        messages = [message for _delivery, message in self._take(deliveries)]
        if messages and self._puller is not None:
            self._puller.ack(messages)

    def _release(self, messages: Sequence[Any]) -> None:
        """Hand messages back for redelivery (nack), without settling anything else."""
        if messages and self._puller is not None:
            self._puller.release(messages)

    def nack(self, deliveries: Sequence[Delivery], *, reason: str, delay: float) -> None:
        """Hand back at once: the subscription's retry policy spaces the redelivery
        (``latam pubsub setup`` sets it from the same backoff settings)."""
        returned = [message for _delivery, message in self._take(deliveries, forget=False)]
        if returned and self._puller is not None:
            self._puller.nack(returned)

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        wire: list[dict[str, Any]] = [
            {"data": d.body, "attributes": letters.stamp(d, reason, d.delivery_attempt)}
            for d in deliveries
        ]
        topic = self.config.dead_letter_topic_path
        publish_rpc(self._clients()[0], topic, wire, self._chunk_limits)
        self.ack(deliveries)

    # -- health -------------------------------------------------------------------------
    def backlog(self) -> Backlog | None:
        """Pub/Sub reports backlog through Cloud Monitoring (num_undelivered_messages)."""
        return None

    def ping(self) -> None:
        publisher, _ = self._clients()
        try:
            publisher.get_topic(topic=self.config.topic_path, timeout=5)
        except google_errors.GoogleAPIError as exc:
            raise BrokerUnavailable(f"Pub/Sub topic check failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        with self._lock:
            puller, self._puller = self._puller, None
        if puller is not None:
            puller.close(list(self._held.values()))
            self._held.clear()
        if self._subscriber is not None:
            self._subscriber.close()
        if self._publisher is not None:
            self._publisher.stop()
