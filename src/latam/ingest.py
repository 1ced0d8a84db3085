"""Ingest: one broker message decoded, its topic found, a batch stored exactly once.

The one use case behind both ways messages reach the store: the worker (a pulled batch)
and the Pub/Sub push endpoint (one message per request). Both get the same isolation,
the same reasons, metrics and trace span:

- ``decode`` turns whatever a producer sent into a ``NewMessage`` or an
  ``InvalidMessage`` with a typed reason; no input makes it raise anything else.
- ``store`` finds each message's topic (by the id latam put on the wire, so a rename
  cannot reroute it; else by name, as foreign producers give it), sets aside data that
  fails the topic's schema (``schema_violation``, with the version and the failures at
  their pointers; ``contracts``), writes the batch in
  one transaction and, when the database refuses some of the data itself, halves the
  batch until each refused message is alone: only those are set aside, with the
  database's own message. A transient store error propagates (the batch is retried).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

import orjson
from opentelemetry import trace
from opentelemetry.trace import Link, Span

from latam import metrics, tracing
from latam.contracts import Contracts
from latam.domain import NewMessage, decode_envelope, utcnow
from latam.errors import InvalidMessage, StoreRejected
from latam.jsonschemas import VIOLATION, violation_reason
from latam.storage.port import Store, WriteResult

log = logging.getLogger(__name__)
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Aside:
    """Why a message is not stored: the dead-letter reason, and the bounded label it is
    counted under (the reason may carry a database's message)."""

    reason: str
    label: str


@dataclass
class Outcome(Generic[K]):
    """What ``store`` did, by the caller's keys: stored (or already there), or set aside."""

    stored: list[K] = field(default_factory=list)
    aside: list[tuple[K, Aside]] = field(default_factory=list)


@dataclass
class Ingest:
    """Decode and store messages; shared by the worker and the push endpoint."""

    store: Store
    max_message_bytes: int
    contracts: Contracts | None = None

    def __post_init__(self) -> None:
        self._contracts = self.contracts or Contracts(self.store)

    def decode(
        self,
        body: bytes,
        attributes: Mapping[str, str],
        *,
        fallback_id: str,
        fallback_published_at: datetime,
        defect: str | None = None,
    ) -> NewMessage:
        """The message, or ``InvalidMessage`` whose ``reason`` says what is wrong."""
        if defect is not None:
            raise InvalidMessage("the broker could not read the message", reason=defect)
        try:
            return decode_envelope(
                body,
                attributes,
                fallback_id=fallback_id,
                fallback_published_at=fallback_published_at,
                max_bytes=self.max_message_bytes,
            )
        except InvalidMessage:
            raise
        except Exception as exc:
            # Isolation: whatever one message holds, it never stops the batch or the
            # process; it is set aside with its bytes, and the cause is logged.
            log.warning("message could not be decoded: %s", type(exc).__name__)
            raise InvalidMessage(
                "the message could not be decoded", reason="invalid_message"
            ) from exc

    def store_batch(self, items: Sequence[tuple[K, NewMessage]]) -> Outcome[K]:
        """Store ``items`` (one transaction unless the database refuses some data)."""
        outcome: Outcome[K] = Outcome()
        writable = self._enforce(self._resolve(items, outcome), outcome)
        if not writable:
            return outcome
        started = time.perf_counter()
        with _span([m for _, _, m in writable]):
            self._write(writable, outcome)
        metrics.STORE_WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(writable))
        return outcome

    def _resolve(
        self, items: Sequence[tuple[K, NewMessage]], outcome: Outcome[K]
    ) -> list[tuple[K, int, NewMessage]]:
        """Each message with its topic's id and current name; unknown topics aside."""
        by_id = self._names(sorted({m.topic_id for _, m in items if m.topic_id is not None}))
        by_name = self._ids(sorted({m.topic for _, m in items if m.topic_id is None}))
        writable: list[tuple[K, int, NewMessage]] = []
        for key, message in items:
            topic_id = message.topic_id
            if topic_id is not None and topic_id in by_id:
                if by_id[topic_id] != message.topic:  # renamed since it was published
                    message = dataclasses.replace(message, topic=by_id[topic_id])
                writable.append((key, topic_id, message))
            elif message.topic_id is None and message.topic in by_name:
                writable.append((key, by_name[message.topic], message))
            else:
                outcome.aside.append((key, Aside("unknown_topic", "unknown_topic")))
        return writable

    def _enforce(
        self, items: list[tuple[K, int, NewMessage]], outcome: Outcome[K]
    ) -> list[tuple[K, int, NewMessage]]:
        """Messages whose data meets their topic's schema, each marked with its version;
        the others aside. A message latam's API accepted names the version it met (0:
        none was enforced), and only that one is checked again: a schema changed between
        the 202 and the store (even to a stricter one, with compatibility ``none``) never
        refuses data already accepted. Any other message is checked against the version
        the topic enforces."""
        enforced = self._contracts.enforced(sorted({topic_id for _, topic_id, _ in items}))
        if not enforced and not any(m.schema_version for _, _, m in items):
            return items  # stored without a version (0 and None both mean none)
        kept: list[tuple[K, int, NewMessage]] = []
        for key, topic_id, message in items:
            version, schema = enforced.get(topic_id, (None, None))
            hint = message.schema_version
            if hint == 0:
                version, schema = None, None
            elif hint is not None and hint != version:
                named = self._contracts.compiled(topic_id, hint)
                version, schema = (hint, named) if named is not None else (version, schema)
            if version is None or schema is None:
                if hint:
                    message = dataclasses.replace(message, schema_version=None)
                kept.append((key, topic_id, message))
                continue
            data = orjson.loads(message.data)
            if not schema.is_valid(data):
                why = violation_reason(version, schema.violations(data, ""))
                outcome.aside.append((key, Aside(why, VIOLATION)))
                continue
            if hint != version:
                message = dataclasses.replace(message, schema_version=version)
            kept.append((key, topic_id, message))
        return kept

    def _ids(self, names: list[str]) -> dict[str, int]:
        """Ids of the named topics; a name the database refuses to look up names none."""
        if not names:
            return {}
        try:
            return self.store.topic_ids(names)
        except StoreRejected:
            if len(names) == 1:
                return {}
            half = len(names) // 2
            return self._ids(names[:half]) | self._ids(names[half:])

    def _names(self, ids: list[int]) -> dict[int, str]:
        return self.store.topic_names(ids) if ids else {}

    def _write(self, items: list[tuple[K, int, NewMessage]], outcome: Outcome[K]) -> None:
        try:
            result = self.store.write_messages([(tid, m) for _, tid, m in items])
        except StoreRejected as exc:
            if len(items) == 1:
                reason = f"store_rejected: {exc.detail}"
                outcome.aside.append((items[0][0], Aside(reason, "store_rejected")))
                return
            half = len(items) // 2
            self._write(items[:half], outcome)
            self._write(items[half:], outcome)
            return
        outcome.stored.extend(key for key, _, _ in items)
        _record(result)


def _record(result: WriteResult) -> None:
    now = utcnow()
    for published_at, count in Counter(result.stored_published_at).items():
        delay = max((now - published_at).total_seconds(), 0.0)
        metrics.observe_many(metrics.FRESHNESS, delay, count)
    for topic, count in result.stored.items():
        metrics.MESSAGES_STORED.labels(topic=topic).inc(count)
    for topic, count in result.duplicates.items():
        if count:
            metrics.MESSAGES_DUPLICATES.labels(topic=topic).inc(count)


def _span(messages: list[NewMessage]) -> AbstractContextManager[Span]:
    """The store-write span: a child of the first publish, linked to the others."""
    parents = list(dict.fromkeys(m.traceparent for m in messages if m.traceparent))
    contexts = [c for c in (tracing.context_from(p) for p in parents[:32]) if c is not None]
    links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts[1:]]
    return tracing.tracer.start_as_current_span(
        "latam.store_write",
        context=contexts[0] if contexts else None,
        links=links,
        attributes={"messaging.batch.message_count": len(messages)},
    )
