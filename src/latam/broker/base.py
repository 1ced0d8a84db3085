"""The broker port: what the API and the worker need from any message broker.

Every adapter gives the same semantics (see tests/contract/test_broker.py):
at-least-once delivery with a count of attempts; ``ack`` after the store committed;
``nack`` redelivers after the delay it is given; ``dead_letter`` moves a message aside
with its reason; dead letters can be listed, inspected, replayed and purged.

Adapters only do what their broker does. The retry policy (when attempts are used up,
how long to wait before the next one) is the worker's, in one place: ``worker.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import orjson

from latam.domain import OutboundMessage

REASON_MAX_ATTEMPTS = "max_delivery_attempts"


# Not frozen: one is built per message on the hot path, and a frozen dataclass costs
# four times as much to construct (about 2 us against 0.4 us). Treat it as read-only.
@dataclass(slots=True)
class Delivery:
    """One delivery of a message to a consumer."""

    handle: str  # the broker's token for ack/nack of this delivery
    broker_message_id: str  # stands in for a missing message_id attribute
    body: bytes
    attributes: Mapping[str, str]
    published_at: datetime  # the broker's own publish time
    delivery_attempt: int  # 1 on first delivery
    # Why the previous attempt failed, where the broker keeps it (the ``nack`` reason).
    last_error: str | None = None
    # Set by an adapter that could not read the message as its producer meant it (a
    # dead-letter reason such as ``invalid_attributes``): the worker sets it aside.
    defect: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside, with why and after how many attempts."""

    id: str
    topic: str
    message_id: str
    body: bytes
    attributes: Mapping[str, str]
    reason: str
    delivery_attempts: int
    published_at: datetime
    dead_lettered_at: datetime


@dataclass(frozen=True, slots=True)
class Backlog:
    """Messages waiting for the worker and the age of the oldest one (None when empty)."""

    messages: int
    oldest_age_seconds: float | None


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry and flow-control knobs: the worker applies the retry policy, adapters the
    ack deadline and flow control (and Pub/Sub copies the rest onto its subscription)."""

    max_delivery_attempts: int = 5
    ack_deadline_seconds: float = 30.0
    backoff_min_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    max_in_flight: int = 5000

    def backoff(self, attempt: int) -> float:
        """Delay before redelivery after the given (1-based) failed attempt."""
        delay = self.backoff_min_seconds * (2 ** max(attempt - 1, 0))
        return float(min(delay, self.backoff_max_seconds))

    def last_attempt(self, attempt: int) -> bool:
        """Whether a delivery with this attempt number must not be tried again."""
        return attempt >= self.max_delivery_attempts


def letter_bytes(body: bytes, attributes: Mapping[str, str]) -> int:
    """What a dead letter weighs against a page's byte budget: its body and attributes."""
    return len(body) + sum(len(k) + len(v) for k, v in attributes.items())


def read_attributes(text: object) -> tuple[dict[str, str], str | None]:
    """A JSON object of strings; its string pairs and ``invalid_attributes`` otherwise."""
    try:
        parsed = orjson.loads(text)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        return {}, "invalid_attributes"
    if not isinstance(parsed, dict):
        return {}, "invalid_attributes"
    for value in parsed.values():
        if type(value) is not str:
            return {k: v for k, v in parsed.items() if isinstance(v, str)}, "invalid_attributes"
    return parsed, None


def within_bytes(letters: Iterable[DeadLetter], max_bytes: int) -> list[DeadLetter]:
    """The letters up to and including the one that brings their weight to ``max_bytes``
    (at least one), as a page of messages is cut."""
    kept: list[DeadLetter] = []
    total = 0
    for letter in letters:
        if kept and total >= max_bytes:
            break
        kept.append(letter)
        total += letter_bytes(letter.body, letter.attributes)
    return kept


class DeadLetterStore(Protocol):
    """Where an adapter keeps its dead letters (a table, a stream, a subscription)."""

    def list_letters(self, *, limit: int, after: str | None, max_bytes: int) -> list[DeadLetter]:
        """Oldest first after ``after``: ``limit`` letters at most, and no more once their
        bodies and attributes reach ``max_bytes`` (``within_bytes``)."""
        ...

    def get(self, dead_letter_id: str) -> DeadLetter: ...
    def replay(self, ids: Sequence[str] | None) -> int: ...
    def purge(self, ids: Sequence[str] | None) -> int: ...
    def count(self) -> int | None: ...


class DeadLettersIn:
    """The port's dead-letter methods, answered by the adapter's ``dead_letters``."""

    @property
    def dead_letters(self) -> DeadLetterStore:
        raise NotImplementedError

    def list_dead_letters(
        self, *, limit: int, after: str | None = None, max_bytes: int = 4 * 1024 * 1024
    ) -> list[DeadLetter]:
        return self.dead_letters.list_letters(limit=limit, after=after, max_bytes=max_bytes)

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return self.dead_letters.get(dead_letter_id)

    def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        return self.dead_letters.replay(ids)

    def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        return self.dead_letters.purge(ids)

    def dead_letter_count(self) -> int | None:
        return self.dead_letters.count()


class Broker(Protocol):
    """The port every broker adapter implements."""

    name: str

    def publish(self, messages: Sequence[OutboundMessage]) -> None:
        """Return only once every message is durably accepted; else BrokerUnavailable."""
        ...

    def pull(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds."""
        ...

    def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    def nack(self, deliveries: Sequence[Delivery], *, reason: str, delay: float) -> None:
        """Redeliver no sooner than ``delay`` seconds from now, whatever the attempt count
        (Pub/Sub spaces redeliveries by its subscription's retry policy instead)."""
        ...

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None: ...
    def list_dead_letters(
        self, *, limit: int, after: str | None = None, max_bytes: int = ...
    ) -> list[DeadLetter]: ...
    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter: ...
    def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int: ...
    def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int: ...
    def backlog(self) -> Backlog | None: ...
    def dead_letter_count(self) -> int | None: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
