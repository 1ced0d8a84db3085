"""The consume loop: pull a batch → decode → one store transaction → ack / nack / dead-letter.

A message is acknowledged only after the transaction that stored it committed, so a
crash at any point leads to redelivery, never to loss; the store's unique key makes the
redelivery a no-op.

The retry policy lives here, and only here: a delivery past ``max_delivery_attempts``
(its consumer kept dying, or it kept failing) is set aside before anything else is done
with it; a batch the store could not take is handed back with the policy's backoff, and
those of its messages on their last attempt are set aside instead. Adapters only
deliver, ack, redeliver after the delay they are given and set aside.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from latam import metrics
from latam.broker.base import REASON_MAX_ATTEMPTS, Broker, Delivery, DeliveryPolicy
from latam.domain import ATTR_MESSAGE_ID, NewMessage
from latam.errors import InvalidMessage, LatamError, TransientError
from latam.health import REFRESH_SECONDS, check_dependencies
from latam.ingest import Aside, Ingest
from latam.storage.port import Store

log = logging.getLogger(__name__)
IDLE_PULL_SECONDS = 0.5  # how long one pull waits on an empty broker


def _failure(written: Future[None]) -> TransientError | None:
    """The transient store error a write ended with; any other error propagates."""
    try:
        written.result()
    except TransientError as exc:
        return exc
    return None


@dataclass
class Prepared:
    """A batch on its way through the store stage: what to store, what to set aside."""

    batch: Sequence[Delivery]
    good: list[tuple[Delivery, NewMessage]] = field(default_factory=list)
    aside: list[tuple[Delivery, Aside]] = field(default_factory=list)
    stored: list[Delivery] = field(default_factory=list)
    # After a transient store failure: handed back for a later attempt, and why.
    retry: list[Delivery] = field(default_factory=list)
    retry_detail: str = ""
    outage: bool = False


@dataclass
class Worker:
    """Moves messages from the broker into the store."""

    store: Store
    broker: Broker
    batch_size: int = 500
    max_wait_seconds: float = 0.05
    max_message_bytes: int = 256 * 1024
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    stop: threading.Event = field(default_factory=threading.Event)
    _failures: int = 0

    def __post_init__(self) -> None:
        self.ingest = Ingest(self.store, self.max_message_bytes)

    def run(self) -> None:
        """Consume until ``stop`` is set; the batches in hand are always finished first.

        Two stages overlap: while one thread writes batch N to the store, this one pulls
        and decodes batch N+1 (the broker and the store are separate connections, and
        their drivers release the GIL while they wait or work). Batch N is settled (ack,
        nack, dead letters) only after its write returned, so a crash at any point still
        means redelivery, never loss.
        """
        log.info("worker started", extra={"broker": self.broker.name})
        with ThreadPoolExecutor(1, thread_name_prefix="latam-store") as writer:
            pending: tuple[Prepared, Future[None]] | None = None
            while not self.stop.is_set():
                batch = self.next_batch()
                prepared = self._prepare(batch) if batch else None
                if pending is not None:
                    self._settle_written(pending[0], _failure(pending[1]))
                pending = (prepared, writer.submit(self._write, prepared)) if prepared else None
            if pending is not None:
                self._settle_written(pending[0], _failure(pending[1]))
        log.info("worker stopped")

    def next_batch(self) -> list[Delivery]:
        """Up to ``batch_size`` deliveries, waiting ``max_wait_seconds`` to fill a batch."""
        try:
            batch = self.broker.pull(max_messages=self.batch_size, timeout=IDLE_PULL_SECONDS)
            deadline = time.monotonic() + self.max_wait_seconds
            while batch and len(batch) < self.batch_size and not self.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                more = self.broker.pull(max_messages=self.batch_size - len(batch), timeout=left)
                batch.extend(more)
        except TransientError as exc:
            log.warning("broker unavailable: %s", exc.detail)
            self._pause()
            return []
        return batch

    def _prepare(self, batch: Sequence[Delivery]) -> Prepared:
        """Sort a batch: deliveries past their attempts and malformed messages aside,
        the others decoded for the store."""
        metrics.MESSAGES_RECEIVED.inc(len(batch))
        prepared = Prepared(batch)
        for delivery in batch:
            if delivery.delivery_attempt > self.policy.max_delivery_attempts:
                # Delivered that often and never settled: its consumer kept dying on it.
                why = delivery.last_error or "ack deadline expired"
                prepared.aside.append((delivery, _exhausted(why)))
                continue
            try:
                message = self.ingest.decode(
                    delivery.body,
                    delivery.attributes,
                    fallback_id=delivery.broker_message_id,
                    fallback_published_at=delivery.published_at,
                    defect=delivery.defect,
                )
            except InvalidMessage as exc:
                prepared.aside.append((delivery, Aside(exc.reason, exc.reason)))
                continue
            prepared.good.append((delivery, message))
        return prepared

    def _write(self, prepared: Prepared) -> None:
        """The store stage (``Ingest.store_batch``); a transient error propagates."""
        if not prepared.good:
            return
        by_handle = {d.handle: d for d, _ in prepared.good}
        outcome = self.ingest.store_batch([(d.handle, m) for d, m in prepared.good])
        prepared.stored = [by_handle[h] for h in outcome.stored]
        prepared.aside.extend((by_handle[h], why) for h, why in outcome.aside)

    def _settle_written(self, prepared: Prepared, failure: TransientError | None) -> None:
        """Settle a batch once its write returned; after a transient failure, first
        wait for the store and write it again (``_recover``)."""
        if failure is not None:
            self._recover(prepared, failure)
        else:
            self._failures = 0
        self._settle(self.broker.ack, prepared.stored)
        self._set_aside(prepared.aside)
        if prepared.retry:
            self._retry_later(prepared.retry, "store_unavailable", prepared.retry_detail)

    def _recover(self, prepared: Prepared, failure: TransientError) -> None:
        """The store failed a batch: wait until it answers, then write the batch again
        in halves down to single messages. An outage costs no delivery attempt; a message
        that fails on its own every time is the only one handed back (and, its attempts
        spent, set aside), instead of its whole batch."""
        log.warning("store write failed: %s", failure.detail)
        prepared.retry_detail = failure.detail
        if not self._wait_for_store():  # stopping: hand everything back as it is
            prepared.retry = [d for d, _ in prepared.good]
            return
        self._write_isolated(prepared.good, prepared)

    def _write_isolated(self, good: list[tuple[Delivery, NewMessage]], prepared: Prepared) -> None:
        if not good:
            return
        if prepared.outage:  # the store went away again: the rest goes back for later
            prepared.retry.extend(d for d, _ in good)
            return
        by_handle = {d.handle: d for d, _ in good}
        try:
            outcome = self.ingest.store_batch([(d.handle, m) for d, m in good])
        except TransientError as exc:
            prepared.retry_detail = exc.detail
            if len(good) == 1 or not self._store_answers():
                prepared.outage = len(good) > 1
                prepared.retry.extend(d for d, _ in good)
                return
            half = len(good) // 2
            self._write_isolated(good[:half], prepared)
            self._write_isolated(good[half:], prepared)
            return
        prepared.stored.extend(by_handle[h] for h in outcome.stored)
        prepared.aside.extend((by_handle[h], why) for h, why in outcome.aside)

    def _store_answers(self) -> bool:
        try:
            self.store.ping()
        except LatamError:
            return False
        return True

    def _retry_later(self, batch: Sequence[Delivery], reason: str, detail: str) -> None:
        """Hand a batch back with the policy's backoff; those on their last attempt are
        set aside instead, so each message is tried at most ``max_delivery_attempts``."""
        log.warning("store unavailable, batch returned for retry: %s", detail or reason)
        last = [d for d in batch if self.policy.last_attempt(d.delivery_attempt)]
        self._set_aside([(d, _exhausted(reason)) for d in last])
        by_delay: defaultdict[float, list[Delivery]] = defaultdict(list)
        for delivery in batch:
            if not self.policy.last_attempt(delivery.delivery_attempt):
                by_delay[self.policy.backoff(delivery.delivery_attempt)].append(delivery)
        for delay, deliveries in by_delay.items():
            metrics.MESSAGES_NACKED.labels(reason=reason).inc(len(deliveries))
            self._settle(self.broker.nack, deliveries, reason=reason, delay=delay)

    def _set_aside(self, aside: Sequence[tuple[Delivery, Aside]]) -> None:
        """Dead-letter (one call per reason), count under the bounded label, log each."""
        by_reason: defaultdict[Aside, list[Delivery]] = defaultdict(list)
        for delivery, why in aside:
            by_reason[why].append(_with_identity(delivery))
        for why, deliveries in by_reason.items():
            self._settle(self.broker.dead_letter, deliveries, reason=why.reason)
            metrics.MESSAGES_DEAD_LETTERED.labels(reason=why.label).inc(len(deliveries))
            for delivery in deliveries:
                log.warning(
                    "message dead-lettered: %s",
                    why.reason,
                    extra={
                        "reason": why.label,
                        "message_id": delivery.attributes.get(ATTR_MESSAGE_ID),
                        "topic": delivery.attributes.get("topic", ""),
                    },
                )

    def _wait_for_store(self) -> bool:
        """Stop consuming until the store answers again, with backoff: pulling during an
        outage would only spend the messages' delivery attempts and dead-letter good data.
        False when the worker is stopping instead."""
        delay, last = 0.2, ""
        while not self.stop.wait(delay):
            try:
                self.store.ping()
            except LatamError as exc:
                if exc.detail != last:  # say why once, not on every retry
                    log.warning("waiting for the store: %s", exc.detail)
                    last = exc.detail
                delay = min(delay * 2, 5.0)
                continue
            log.info("store available again; consuming")
            return True
        return False

    @staticmethod
    def _settle(
        action: Callable[..., None], deliveries: Sequence[Delivery], **kwargs: str | float
    ) -> None:
        """Ack/nack/dead-letter; if the broker is gone the lease expiry redelivers them."""
        if not deliveries:
            return
        try:
            action(deliveries, **kwargs)
        except LatamError as exc:
            log.warning("could not settle %d deliveries: %s", len(deliveries), exc.detail)

    def _pause(self) -> None:
        """Back off after consecutive failures so a dead dependency is not hammered."""
        self._failures += 1
        self.stop.wait(min(0.1 * 2 ** min(self._failures, 6), 5.0))

    def refresh_gauges(self) -> None:
        """Record backlog, dead letters and dependency health (called periodically)."""
        check_dependencies(self.store, self.broker)
        try:
            backlog = self.broker.backlog()
            dead = self.broker.dead_letter_count()
        except LatamError:
            return
        broker = self.broker.name
        if dead is not None:
            metrics.DEAD_LETTERS.labels(broker=broker).set(dead)
        if backlog is not None:
            metrics.BACKLOG.labels(broker=broker).set(backlog.messages)
            metrics.OLDEST_UNACKED.labels(broker=broker).set(backlog.oldest_age_seconds or 0.0)

    def refresh_gauges_forever(self) -> None:
        while not self.stop.wait(REFRESH_SECONDS):
            self.refresh_gauges()


def _exhausted(why: str) -> Aside:
    return Aside(f"{REASON_MAX_ATTEMPTS}: {why}", REASON_MAX_ATTEMPTS)


def _with_identity(delivery: Delivery) -> Delivery:
    """The delivery with the id it was (or would be) stored under: a message without a
    ``message_id`` is stored under the broker's id, and its dead letter must carry that
    id, or a replay would store it again under a new one."""
    if delivery.defect is not None or delivery.attributes.get(ATTR_MESSAGE_ID):
        return delivery
    attributes = {**delivery.attributes, ATTR_MESSAGE_ID: delivery.broker_message_id}
    return dataclasses.replace(delivery, attributes=attributes)
