"""The consume loop: pull a batch → decode → one store transaction → ack / nack / dead-letter.

A message is acknowledged only after the transaction that stored it committed, so a
crash at any point leads to redelivery, never to loss; the store's unique key makes the
redelivery a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Link, Span

from latam import metrics, tracing
from latam.broker.base import Broker, Delivery
from latam.domain import NewMessage, decode_envelope, utcnow
from latam.errors import InvalidMessage, LatamError, StoreRejected, TransientError
from latam.health import check_dependencies
from latam.storage.port import Store

log = logging.getLogger(__name__)
IDLE_PULL_SECONDS = 0.5  # how long one pull waits on an empty broker
GAUGE_REFRESH_SECONDS = 5.0


def _failure(written: Future[None]) -> TransientError | None:
    """The transient store error a write ended with; any other error propagates."""
    try:
        written.result()
    except TransientError as exc:
        return exc
    return None


@dataclass
class Prepared:
    """A decoded batch on its way through the store stage."""

    batch: Sequence[Delivery]
    good: list[tuple[Delivery, NewMessage]] = field(default_factory=list)
    poison: defaultdict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    writable: list[tuple[Delivery, NewMessage]] = field(default_factory=list)
    # Refused by the database itself, with its message: dead-lettered one by one.
    rejected: list[tuple[Delivery, str]] = field(default_factory=list)


@dataclass
class Worker:
    """Moves messages from the broker into the store."""

    store: Store
    broker: Broker
    batch_size: int = 500
    max_wait_seconds: float = 0.05
    max_message_bytes: int = 256 * 1024
    max_delivery_attempts: int = 5
    stop: threading.Event = field(default_factory=threading.Event)
    _failures: int = 0

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
                if pending is not None and not self._finish(pending[0], _failure(pending[1])):
                    if prepared is not None:  # pulled while the store failed: hand it back
                        self._nack(prepared.batch, reason="store_unavailable", detail="")
                    pending, prepared = None, None
                    self._wait_for_store()
                pending = (prepared, writer.submit(self._write, prepared)) if prepared else None
            if pending is not None:
                self._finish(pending[0], _failure(pending[1]))
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
        """Decode a batch and sort it into messages to store and poison by reason."""
        metrics.MESSAGES_RECEIVED.inc(len(batch))
        prepared = Prepared(batch)
        for delivery in batch:
            try:
                prepared.good.append((delivery, self._decode(delivery)))
            except InvalidMessage as exc:
                prepared.poison[exc.reason].append(delivery)
            except Exception as exc:
                # Isolation: whatever one message holds, it never stops the batch or the
                # worker; it is set aside with its bytes, and the cause is logged.
                log.warning("message could not be decoded: %s", type(exc).__name__)
                prepared.poison["invalid_message"].append(delivery)
        return prepared

    def _finish(self, prepared: Prepared, failure: TransientError | None) -> bool:
        """Settle a batch once its write returned; False when the store failed (nacked)."""
        if failure is not None:
            self._nack(prepared.batch, reason="store_unavailable", detail=failure.detail)
            return False
        self._failures = 0
        self._settle(self.broker.ack, [d for d, _ in prepared.writable])
        for reason, deliveries in prepared.poison.items():
            self._set_aside(deliveries, reason, label=reason)
        for delivery, detail in prepared.rejected:
            self._set_aside([delivery], f"store_rejected: {detail}", label="store_rejected")
        return True

    def _set_aside(self, deliveries: Sequence[Delivery], reason: str, *, label: str) -> None:
        """Dead-letter, count under the bounded ``label`` and log each with its reason."""
        self._settle(self.broker.dead_letter, deliveries, reason=reason)
        metrics.MESSAGES_DEAD_LETTERED.labels(reason=label).inc(len(deliveries))
        for delivery in deliveries:
            log.warning(
                "message dead-lettered: %s",
                reason,
                extra={
                    "reason": label,
                    "message_id": delivery.attributes.get("message_id")
                    or delivery.broker_message_id,
                    "topic": delivery.attributes.get("topic", ""),
                },
            )

    def _decode(self, delivery: Delivery) -> NewMessage:
        if delivery.defect is not None:
            raise InvalidMessage("the broker could not read the message", reason=delivery.defect)
        return decode_envelope(
            delivery.body,
            delivery.attributes,
            fallback_id=delivery.broker_message_id,
            fallback_published_at=delivery.published_at,
            max_bytes=self.max_message_bytes,
        )

    def _write(self, prepared: Prepared) -> None:
        """The store stage: one transaction for the batch's messages of known topics
        (more only when the database refuses some of the data, see ``_store``)."""
        good, poison = prepared.good, prepared.poison
        if not good:
            return
        ids = self._topic_ids(sorted({message.topic for _, message in good}))
        writable = [(d, m) for d, m in good if m.topic in ids]
        unknown = [d for d, m in good if m.topic not in ids]
        if unknown:
            poison["unknown_topic"].extend(unknown)
        if not writable:
            return
        started = time.perf_counter()
        with self._span(writable):
            self._store([(d, ids[m.topic], m) for d, m in writable], prepared)
        refused = {d.handle for d, _ in prepared.rejected}
        prepared.writable = [(d, m) for d, m in writable if d.handle not in refused]
        metrics.STORE_WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(writable))

    def _topic_ids(self, names: list[str]) -> dict[str, int]:
        """Ids of the named topics; a name the database refuses to look up names none."""
        try:
            return self.store.topic_ids(names)
        except StoreRejected:
            if len(names) == 1:
                return {}
            half = len(names) // 2
            return self._topic_ids(names[:half]) | self._topic_ids(names[half:])

    def _store(self, items: list[tuple[Delivery, int, NewMessage]], prepared: Prepared) -> None:
        """Write ``items`` in one transaction. When the database refuses the data itself,
        split in halves until each refused message is alone: only those are set aside,
        with the database's message; a transient error fails the whole batch (nack)."""
        try:
            result = self.store.write_messages([(tid, m) for _, tid, m in items])
        except StoreRejected as exc:
            if len(items) == 1:
                prepared.rejected.append((items[0][0], exc.detail))
                return
            half = len(items) // 2
            self._store(items[:half], prepared)
            self._store(items[half:], prepared)
            return
        now = utcnow()
        for published_at, count in Counter(result.stored_published_at).items():
            delay = max((now - published_at).total_seconds(), 0.0)
            metrics.observe_many(metrics.FRESHNESS, delay, count)
        for topic, count in result.stored.items():
            metrics.MESSAGES_STORED.labels(topic=topic).inc(count)
        for topic, count in result.duplicates.items():
            if count:
                metrics.MESSAGES_DUPLICATES.labels(topic=topic).inc(count)

    @staticmethod
    def _span(writable: list[tuple[Delivery, NewMessage]]) -> AbstractContextManager[Span]:
        """The store-write span: a child of the first publish, linked to the others."""
        parents = list(dict.fromkeys(m.traceparent for _, m in writable if m.traceparent))
        contexts = [c for c in (tracing.context_from(p) for p in parents[:32]) if c is not None]
        links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts[1:]]
        return tracing.tracer.start_as_current_span(
            "latam.store_write",
            context=contexts[0] if contexts else None,
            links=links,
            attributes={"messaging.batch.message_count": len(writable)},
        )

    def _nack(self, batch: Sequence[Delivery], *, reason: str, detail: str) -> None:
        log.warning("store unavailable, batch returned for retry: %s", detail or reason)
        metrics.MESSAGES_NACKED.labels(reason=reason).inc(len(batch))
        # The broker dead-letters the ones on their last attempt; count them here too.
        last = sum(1 for d in batch if d.delivery_attempt >= self.max_delivery_attempts)
        if last:
            metrics.MESSAGES_DEAD_LETTERED.labels(reason="max_delivery_attempts").inc(last)
        self._settle(self.broker.nack, batch, reason=reason)

    def _wait_for_store(self) -> None:
        """Stop consuming until the store answers again, with backoff: pulling during an
        outage would only spend the messages' delivery attempts and dead-letter good data."""
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
            return

    @staticmethod
    def _settle(action: Callable[..., None], deliveries: Sequence[Delivery], **kwargs: str) -> None:
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
        if dead is not None:
            metrics.DEAD_LETTERS.set(dead)
        if backlog is not None:
            metrics.BACKLOG.set(backlog.messages)
            metrics.OLDEST_UNACKED.set(backlog.oldest_age_seconds or 0.0)

    def refresh_gauges_forever(self) -> None:
        while not self.stop.wait(GAUGE_REFRESH_SECONDS):
            self.refresh_gauges()
