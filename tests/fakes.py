"""In-memory fakes of the two ports, for unit tests that need no server.

``MemoryBroker`` has the semantics of the embedded SQLite broker and passes the broker
contract suite (tests/contract/test_broker.py); ``MemoryStore`` those of ``SqlStore`` and
passes the store contract suite. Both are thread-safe behind one lock each.
"""

from __future__ import annotations

import itertools
import math
import operator
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from latam.aggregates import (
    PERCENTILES,
    AggregateQuery,
    AggregateRow,
    metric_value,
    number,
)
from latam.broker.base import Backlog, DeadLetter, Delivery, DeliveryPolicy, within_bytes
from latam.domain import (
    ATTR_MESSAGE_ID,
    ATTR_TOPIC,
    BUCKET_SECONDS,
    NewMessage,
    OutboundMessage,
    Topic,
    utcnow,
)
from latam.errors import BrokerUnavailable, Conflict, NotFound, StoreUnavailable
from latam.filters import FieldPath, Filter, Filters
from latam.storage.port import (
    Bucket,
    SchemaVersion,
    StatsVersion,
    StoredMessage,
    TopicTotals,
    WriteResult,
)

MAX_REASON = 1000  # characters of a reason kept, as the SQLite broker does
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- broker ---------------------------------------------------------------------------
@dataclass
class _Row:
    """One queued message; ``lease`` is the token of its latest delivery."""

    seq: int
    body: bytes
    attributes: dict[str, str]
    published_at: float
    available_at: float
    attempts: int = 0
    lease: str | None = None
    last_error: str | None = None


@dataclass
class MemoryQueue:
    """The state every ``MemoryBroker`` client of one queue shares, as a broker server."""

    rows: dict[int, _Row] = field(default_factory=dict)
    dead: dict[int, DeadLetter] = field(default_factory=dict)
    # One lock for everything; the condition wakes waiting pulls on publish and replay.
    changed: threading.Condition = field(default_factory=threading.Condition)
    _seqs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _dead_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, body: bytes, attributes: Mapping[str, str], published_at: float = 0.0) -> None:
        """Enqueue one message, as any producer (latam or foreign) does."""
        with self.changed:
            now = time.time()
            seq = next(self._seqs)
            self.rows[seq] = _Row(seq, body, dict(attributes), published_at or now, now)
            self.changed.notify_all()

    def move_to_dead(self, row: _Row, reason: str, attempts: int) -> None:
        """Set ``row`` aside (the caller holds the lock)."""
        del self.rows[row.seq]
        dead_id = next(self._dead_ids)
        self.dead[dead_id] = DeadLetter(
            id=str(dead_id),
            topic=row.attributes.get(ATTR_TOPIC, ""),
            message_id=row.attributes.get(ATTR_MESSAGE_ID, ""),
            body=row.body,
            attributes=row.attributes,
            reason=reason[:MAX_REASON],
            delivery_attempts=attempts,
            published_at=datetime.fromtimestamp(row.published_at, UTC),
            dead_lettered_at=utcnow(),
        )


class MemoryBroker:
    """The Broker port in memory; clients built on one ``MemoryQueue`` share messages.

    Set ``unavailable`` to make every call raise ``BrokerUnavailable``.
    """

    name = "memory"

    def __init__(
        self, policy: DeliveryPolicy | None = None, queue: MemoryQueue | None = None
    ) -> None:
        self.policy = policy or DeliveryPolicy()
        self.queue = queue or MemoryQueue()
        self.unavailable = False
        # Handle -> lease expiry of this client's deliveries not yet settled (flow control).
        self._in_flight: dict[str, float] = {}

    def _check(self) -> None:
        if self.unavailable:
            raise BrokerUnavailable("the memory broker is unavailable")

    def publish(self, messages: Sequence[OutboundMessage]) -> None:
        self._check()
        for m in messages:
            self.queue.put(m.body, m.wire_attributes(), m.published_at.timestamp())

    def pull(self, *, max_messages: int, timeout: float) -> list[Delivery]:
        self._check()
        deadline = time.monotonic() + timeout
        with self.queue.changed:
            while True:
                now = time.time()
                live = {h: t for h, t in self._in_flight.items() if t > now}
                self._in_flight = live  # an expired lease no longer holds room
                room = min(max_messages, self.policy.max_in_flight - len(live))
                deliveries = self._lease(room, now) if room > 0 else []
                left = deadline - time.monotonic()
                if deliveries or left <= 0:
                    return deliveries
                # Wake on publish/ack/replay, or when a lease or a backoff runs out.
                due = [r.available_at - now for r in self.queue.rows.values()]
                due = [d for d in due if d > 0] + [t - now for t in live.values()]
                self.queue.changed.wait(max(min([left, *due]), 0.001))

    def _lease(self, limit: int, now: float) -> list[Delivery]:
        token = secrets.token_hex(8)
        ready = sorted(
            (r for r in self.queue.rows.values() if r.available_at <= now),
            key=lambda r: (r.available_at, r.seq),
        )
        deliveries: list[Delivery] = []
        for row in ready:
            if len(deliveries) >= limit:
                break
            row.attempts += 1
            row.lease, row.available_at = token, now + self.policy.ack_deadline_seconds
            delivery = Delivery(
                handle=f"{row.seq}:{token}",
                broker_message_id=f"memory-{row.seq}",
                body=row.body,
                attributes=dict(row.attributes),
                published_at=datetime.fromtimestamp(row.published_at, UTC),
                delivery_attempt=row.attempts,
                last_error=row.last_error,
            )
            deliveries.append(delivery)
            self._in_flight[delivery.handle] = row.available_at
        return deliveries

    def _held(self, delivery: Delivery) -> _Row | None:
        """The delivery's row while its lease still holds (a late settle is a no-op)."""
        self._in_flight.pop(delivery.handle, None)
        seq, lease = delivery.handle.split(":", 1)
        row = self.queue.rows.get(int(seq))
        return row if row is not None and row.lease == lease else None

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._check()
        with self.queue.changed:
            for delivery in deliveries:
                if (row := self._held(delivery)) is not None:
                    del self.queue.rows[row.seq]
            self.queue.changed.notify_all()  # room for a pull held back by flow control

    def nack(self, deliveries: Sequence[Delivery], *, reason: str, delay: float) -> None:
        self._check()
        with self.queue.changed:
            for delivery in deliveries:
                if (row := self._held(delivery)) is None:
                    continue
                row.lease, row.last_error = None, reason
                row.available_at = time.time() + delay
            self.queue.changed.notify_all()

    def dead_letter(self, deliveries: Sequence[Delivery], *, reason: str) -> None:
        self._check()
        with self.queue.changed:
            for delivery in deliveries:
                if (row := self._held(delivery)) is not None:
                    # As the adapters do: the attributes as delivered (the worker adds
                    # the id a message without one was stored under).
                    row.attributes = dict(delivery.attributes)
                    self.queue.move_to_dead(row, reason, delivery.delivery_attempt)
            self.queue.changed.notify_all()

    def list_dead_letters(
        self, *, limit: int, after: str | None = None, max_bytes: int = 4 * 1024 * 1024
    ) -> list[DeadLetter]:
        self._check()
        start = _dead_id(after) or 0
        with self.queue.changed:
            chosen = [self.queue.dead[i] for i in sorted(self.queue.dead) if i > start][:limit]
        return within_bytes(chosen, max_bytes)

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        self._check()
        with self.queue.changed:
            letter = self.queue.dead.get(_dead_id(dead_letter_id) or 0)
        if letter is None:
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return letter

    def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        """Put dead letters back on the queue as new messages, oldest first."""
        self._check()
        with self.queue.changed:
            chosen = sorted(self._chosen(ids))
            for dead_id in chosen:
                letter = self.queue.dead.pop(dead_id)
                self.queue.put(letter.body, letter.attributes, letter.published_at.timestamp())
            return len(chosen)

    def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        self._check()
        with self.queue.changed:
            chosen = self._chosen(ids)
            for dead_id in chosen:
                del self.queue.dead[dead_id]
            return len(chosen)

    def _chosen(self, ids: Sequence[str] | None) -> set[int]:
        if ids is None:
            return set(self.queue.dead)
        return {n for n in map(_dead_id, ids) if n is not None and n in self.queue.dead}

    def backlog(self) -> Backlog:
        """Every message not yet acked, leased or not, like the SQLite broker."""
        self._check()
        with self.queue.changed:
            oldest = min((r.published_at for r in self.queue.rows.values()), default=None)
            count = len(self.queue.rows)
        age = max(time.time() - oldest, 0.0) if oldest is not None else None
        return Backlog(messages=count, oldest_age_seconds=age)

    def dead_letter_count(self) -> int:
        self._check()
        with self.queue.changed:
            return len(self.queue.dead)

    def ping(self) -> None:
        self._check()

    def close(self) -> None:
        """Nothing to release; the queue outlives its clients like a server would."""


def _dead_id(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None


# -- store ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Stored:
    topic_id: int
    message: StoredMessage
    size_bytes: int


class MemoryStore:
    """The Store port in memory, with SqlStore's results.

    Set ``down`` to make every call raise ``StoreUnavailable``; ``pings`` counts pings
    and ``calls`` every other call, so tests can see what a worker did during an outage.
    """

    def __init__(self) -> None:
        self.down = False
        self.pings = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._topics: dict[int, Topic] = {}
        self._messages: dict[tuple[int, str], _Stored] = {}
        self._topic_ids = itertools.count(1)
        self._seqs = itertools.count(1)  # one sequence for all topics, as in SQL
        self._schemas: dict[tuple[int, int], SchemaVersion] = {}
        self._enforced: dict[int, int] = {}
        self._stats_versions: Counter[int] = Counter()  # as ``topics.stats_version``

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("the memory store is down")

    def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise StoreUnavailable("the memory store is down")

    def create_topic(self, name: str) -> Topic:
        self._check()
        now = utcnow()
        with self._lock:
            self._unique(name)
            topic = Topic(id=next(self._topic_ids), name=name, created_at=now, updated_at=now)
            self._topics[topic.id] = topic
        return topic

    def _unique(self, name: str, keep: int = 0) -> None:
        if any(t.name == name and t.id != keep for t in self._topics.values()):
            raise Conflict(f"topic {name!r} already exists")

    def get_topic(self, topic_id: int) -> Topic:
        self._check()
        with self._lock:
            if topic_id not in self._topics:
                raise NotFound(f"topic {topic_id} does not exist")
            return self._topics[topic_id]

    def topic_ids(self, names: Sequence[str]) -> dict[str, int]:
        self._check()
        with self._lock:
            return {t.name: t.id for t in self._topics.values() if t.name in set(names)}

    def topic_names(self, ids: Sequence[int]) -> dict[int, str]:
        self._check()
        with self._lock:
            return {i: self._topics[i].name for i in set(ids) if i in self._topics}

    def list_topics(self, *, limit: int, after_id: int = 0) -> list[Topic]:
        self._check()
        with self._lock:
            return [self._topics[i] for i in sorted(self._topics) if i > after_id][:limit]

    def rename_topic(self, topic_id: int, name: str) -> Topic:
        topic = self.get_topic(topic_id)
        with self._lock:
            self._unique(name, keep=topic_id)
            renamed = Topic(topic_id, name, topic.created_at, utcnow(), topic.retention_seconds)
            self._topics[topic_id] = renamed
            self._stats_versions[topic_id] += 1
        return renamed

    def delete_topic(self, topic_id: int) -> None:
        self.get_topic(topic_id)
        with self._lock:
            del self._topics[topic_id]
            self._messages = {k: v for k, v in self._messages.items() if k[0] != topic_id}
            self._schemas = {k: v for k, v in self._schemas.items() if k[0] != topic_id}
            self._enforced.pop(topic_id, None)

    def write_messages(self, batch: Sequence[tuple[int, NewMessage]]) -> WriteResult:
        """All or nothing; an id already stored (or repeated in the batch) is a duplicate."""
        self._check()
        now = utcnow()
        stored: Counter[str] = Counter()
        published: list[datetime] = []
        with self._lock:
            if any(topic_id not in self._topics for topic_id, _ in batch):
                # SqlStore: the foreign key refuses the whole transaction.
                raise StoreUnavailable("the store rejected the write")
            for topic_id, m in batch:
                stored[m.topic] += 0  # a topic with only duplicates still reports 0 stored
                if (topic_id, m.message_id) in self._messages:
                    continue
                attributes = orjson.dumps(m.attributes).decode() if m.attributes else "{}"
                row = StoredMessage(
                    next(self._seqs),
                    m.message_id,
                    m.data,
                    attributes,
                    m.published_at,
                    now,
                    m.schema_version or None,
                )
                self._messages[topic_id, m.message_id] = _Stored(
                    topic_id, row, len(m.data.encode())
                )
                stored[m.topic] += 1
                published.append(m.published_at)
                self._stats_versions[topic_id] += 1
        received = Counter(m.topic for _, m in batch)
        duplicates = {name: count - stored[name] for name, count in received.items()}
        return WriteResult(
            stored=dict(stored), duplicates=duplicates, stored_published_at=published
        )

    def _rows(
        self, topic_id: int, since: datetime | None = None, until: datetime | None = None
    ) -> list[_Stored]:
        """A topic's messages in seq order, ``since`` inclusive and ``until`` exclusive."""
        with self._lock:
            rows = [s for s in self._messages.values() if s.topic_id == topic_id]
        return sorted(
            (
                s
                for s in rows
                if (since is None or s.message.published_at >= since)
                and (until is None or s.message.published_at < until)
            ),
            key=lambda s: s.message.seq,
        )

    def list_messages(
        self,
        topic_id: int,
        *,
        limit: int,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        after_time: datetime | None = None,
        filters: Filters | None = None,
    ) -> list[StoredMessage]:
        self._check()
        rows = [s.message for s in self._rows(topic_id, since, until)]
        if filters:
            rows = [m for m in rows if all(passes(m, f) for f in filters.items)]
        if since is None and until is None:
            return [m for m in rows if m.seq > after_seq][:limit]
        in_time = sorted(rows, key=lambda m: (m.published_at, m.seq))
        if after_time is not None:
            in_time = [m for m in in_time if (m.published_at, m.seq) > (after_time, after_seq)]
        return in_time[:limit]

    def page_messages(
        self,
        topic_id: int,
        *,
        limit: int,
        max_bytes: int,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        after_time: datetime | None = None,
        filters: Filters | None = None,
    ) -> tuple[list[StoredMessage], bool]:
        probe = self.list_messages(
            topic_id,
            limit=limit + 1,
            after_seq=after_seq,
            since=since,
            until=until,
            after_time=after_time,
            filters=filters,
        )
        shown: list[StoredMessage] = []
        used = 0
        for message in probe[:limit]:
            if shown and used >= max_bytes:
                break
            shown.append(message)
            used += len(message.data.encode()) + len(message.attributes)
        return shown, len(probe) > len(shown)

    def count_messages(self, topic_id: int) -> int:
        return len(self._rows(topic_id))

    def last_seq(self, topic_id: int) -> int:
        self._check()
        rows = self._rows(topic_id)
        return rows[-1].message.seq if rows else 0

    def topic_stats(
        self,
        topic_id: int,
        *,
        bucket: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[Bucket]:
        """Non-empty buckets in time order: whole epoch seconds floored to the width."""
        self._check()
        self.get_topic(topic_id)
        width = BUCKET_SECONDS[bucket]
        counts: Counter[int] = Counter()
        sizes: Counter[int] = Counter()
        for s in self._rows(topic_id, since, until):
            # Integer arithmetic: a float timestamp could round 59.999999 s up a minute.
            seconds = (s.message.published_at - EPOCH) // timedelta(seconds=1)
            start = seconds - seconds % width
            counts[start] += 1
            sizes[start] += s.size_bytes
        starts = sorted(counts)[:limit]
        return [Bucket(datetime.fromtimestamp(t, UTC), counts[t], sizes[t]) for t in starts]

    def aggregate(self, topic_id: int, query: AggregateQuery, *, limit: int) -> list[AggregateRow]:
        """The aggregation in Python (a test fake: the SQL stores compute it in SQL)."""
        self._check()
        self.get_topic(topic_id)
        found: dict[tuple[int | None, tuple[tuple[str, Any], ...]], list[StoredMessage]] = {}
        for s in self._rows(topic_id, query.since, query.until):
            if not all(passes(s.message, f) for f in query.filters.items):
                continue
            start = None
            if query.bucket:
                seconds = (s.message.published_at - EPOCH) // timedelta(seconds=1)
                start = seconds - seconds % BUCKET_SECONDS[query.bucket]
            group = tuple(_scalar(field_value(s.message, f)) for f in query.group_by)
            found.setdefault((start, group), []).append(s.message)
        if not query.bucket and not query.group_by and not found:
            found[None, ()] = []  # one row, as SQL's aggregate without GROUP BY
        rows = [
            AggregateRow(
                bucket=None if start is None else datetime.fromtimestamp(start, UTC),
                group=tuple(value for _, value in group),
                values=tuple(
                    metric_value(m, _fake_metric(m.name, m.field, rows)) for m in query.metrics
                ),
            )
            for (start, group), rows in found.items()
        ]
        return rows[:limit]

    def all_stats(self) -> list[TopicTotals]:
        self._check()
        with self._lock:
            topics = [self._topics[i] for i in sorted(self._topics)]
        totals = []
        for topic in topics:
            rows = self._rows(topic.id)
            times = [s.message.published_at for s in rows]
            size = sum(s.size_bytes for s in rows)
            first, last = (min(times), max(times)) if times else (None, None)
            totals.append(TopicTotals(topic.id, topic.name, len(rows), size, first, last))
        return totals

    def set_retention(self, topic_id: int, seconds: int | None) -> Topic:
        topic = self.get_topic(topic_id)
        with self._lock:
            changed = Topic(topic.id, topic.name, topic.created_at, utcnow(), seconds)
            self._topics[topic_id] = changed
        return changed

    def retained_topics(self) -> dict[int, int]:
        self._check()
        with self._lock:
            return {
                t.id: t.retention_seconds
                for t in self._topics.values()
                if t.retention_seconds is not None
            }

    def expire(self, topic_id: int, *, before: datetime, limit: int) -> int:
        self._check()
        with self._lock:
            old = sorted(
                (s.message.published_at, s.message.seq, key)
                for key, s in self._messages.items()
                if key[0] == topic_id and s.message.published_at < before
            )[:limit]
            for _, _, key in old:
                del self._messages[key]
            if old:
                self._stats_versions[topic_id] += 1
        return len(old)

    def stats_version(self, topic_id: int | None) -> StatsVersion | None:
        self._check()
        with self._lock:
            ids = (
                sorted(self._topics)
                if topic_id is None
                else [topic_id] * (topic_id in self._topics)
            )
            return tuple((i, self._stats_versions[i]) for i in ids)

    def add_schema(
        self, topic_id: int, *, version: int, schema: str, compatibility: str
    ) -> SchemaVersion:
        self.get_topic(topic_id)
        with self._lock:
            if (topic_id, version) in self._schemas:
                raise Conflict(f"version {version} was added meanwhile; try again")
            added = SchemaVersion(topic_id, version, schema, compatibility, utcnow(), True)
            self._schemas[topic_id, version] = added
            self._enforced[topic_id] = version
        return added

    def drop_schema(self, topic_id: int) -> None:
        self.get_topic(topic_id)
        with self._lock:
            self._enforced.pop(topic_id, None)

    def _as_stored(self, found: SchemaVersion) -> SchemaVersion:
        current = self._enforced.get(found.topic_id) == found.version
        return SchemaVersion(
            found.topic_id,
            found.version,
            found.schema,
            found.compatibility,
            found.created_at,
            current,
        )

    def schema_versions(self, topic_id: int) -> list[SchemaVersion]:
        self.get_topic(topic_id)
        with self._lock:
            found = [v for k, v in sorted(self._schemas.items()) if k[0] == topic_id]
            return [self._as_stored(v) for v in found]

    def schema_version(self, topic_id: int, version: int) -> SchemaVersion:
        self.get_topic(topic_id)
        with self._lock:
            if (topic_id, version) not in self._schemas:
                raise NotFound(f"topic {topic_id} has no schema version {version}")
            return self._as_stored(self._schemas[topic_id, version])

    def enforced_schemas(self, topic_ids: Sequence[int]) -> dict[int, SchemaVersion]:
        self._check()
        with self._lock:
            return {
                t: self._as_stored(self._schemas[t, self._enforced[t]])
                for t in set(topic_ids)
                if t in self._enforced
            }

    def close(self) -> None:
        """Nothing to release."""


_MISSING = object()


def field_value(message: StoredMessage, path: FieldPath) -> Any:
    """The JSON value at ``path`` of a stored message, ``_MISSING`` when absent."""
    value: Any = orjson.loads(getattr(message, path.root))
    for key in path.keys:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _scalar(value: Any) -> tuple[str, Any]:
    """A JSON value as (type, value) as the stores group it: numbers by value, objects,
    arrays, null and missing as null (the tag keeps True apart from 1)."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", number(value))
    return ("string", value) if isinstance(value, str) else ("null", None)


def _fake_metric(name: str, path: FieldPath | None, rows: list[StoredMessage]) -> Any:
    """One metric of a group's messages, with the semantics of ``latam.aggregates``."""
    if path is None:
        return len(rows)
    scalars = [_scalar(field_value(m, path)) for m in rows]
    if name == "count_distinct":
        return len({s for s in scalars if s[0] != "null"})
    numbers = [value for kind, value in scalars if kind == "number"]
    if not numbers:
        return None
    if name in PERCENTILES:
        ordered = sorted(float(n) for n in numbers)
        position = PERCENTILES[name] * (len(ordered) - 1)
        low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
        return low + (high - low) * (position - math.floor(position))
    if name == "avg":
        return sum(numbers) / len(numbers)
    return {"sum": sum, "min": min, "max": max}[name](numbers)


def passes(message: StoredMessage, item: Filter) -> bool:
    """The fake's filter, in Python, with the semantics of ``latam.filters``."""
    value = field_value(message, item.field)
    if item.op == "is":
        if item.value is None:
            return value is _MISSING or value is None
        return value is item.value
    wanted = list(item.values) if item.op == "in" else [item.value]
    ops = {
        "eq": operator.eq,
        "in": operator.eq,
        "neq": operator.ne,
        "lt": operator.lt,
        "lte": operator.le,
        "gt": operator.gt,
        "gte": operator.ge,
    }
    compare = ops[item.op]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    for candidate in wanted:
        if isinstance(candidate, str) and isinstance(value, str) and compare(value, candidate):
            return True
        if not isinstance(candidate, str) and number and compare(value, candidate):
            return True
    return False
