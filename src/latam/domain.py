"""Domain data and its validation: topics, messages, the wire envelope, cursors.

Pure functions and frozen dataclasses only; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import simplejson

from latam.errors import InvalidMessage, InvalidRequest

MAX_TOPIC_NAME = 200
MAX_MESSAGE_ID = 128
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY = 256
MAX_ATTRIBUTE_VALUE = 1024
# Attribute names the envelope uses itself; producers cannot set them as user attributes.
ATTR_TOPIC = "topic"
# The same, under a name the Pub/Sub client's ``publish(topic, data, **attributes)`` can
# send: its own first parameter is called ``topic``. ``topic`` wins when both are set.
ATTR_TOPIC_ALIAS = "latam_topic"
# The topic's id, set by latam's own producers: a rename cannot reroute the message.
ATTR_TOPIC_ID = "topic_id"
ATTR_MESSAGE_ID = "message_id"
ATTR_PUBLISHED_AT = "published_at"
ATTR_TRACEPARENT = "traceparent"
# The topic's schema version latam's API validated the data against.
ATTR_SCHEMA_VERSION = "latam_schema_version"
RESERVED_ATTRIBUTES = frozenset(
    {
        ATTR_TOPIC,
        ATTR_TOPIC_ALIAS,
        ATTR_TOPIC_ID,
        ATTR_MESSAGE_ID,
        ATTR_PUBLISHED_AT,
        ATTR_TRACEPARENT,
        ATTR_SCHEMA_VERSION,
    }
)
# Width of each stats bucket in seconds; UTC has no DST, so every day is 86,400 s.
BUCKET_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_message_id() -> str:
    """A random message id for producers that do not give one."""
    return uuid.uuid4().hex


@functools.lru_cache(maxsize=4096)
def isoformat(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix and microseconds."""
    # isoformat, not strftime: "%Y" does not pad years before 1000 to four digits.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@functools.lru_cache(maxsize=1024)
def parse_timestamp(value: str) -> datetime:
    """Parse ISO 8601 (naive means UTC) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Topic:
    """A named stream of messages (the original brief's *tema*)."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    # Messages published longer ago than this are deleted (None: kept forever).
    retention_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message ready for the broker: body bytes plus string attributes."""

    topic: str
    message_id: str
    body: bytes
    attributes: Mapping[str, str]
    published_at: datetime
    traceparent: str | None = None
    topic_id: int | None = None
    # The schema version the API validated the data against; 0: the topic enforced none.
    schema_version: int | None = None

    def wire_attributes(self) -> dict[str, str]:
        """User attributes plus the envelope's own ones."""
        wire = {
            **self.attributes,
            ATTR_TOPIC: self.topic,
            ATTR_MESSAGE_ID: self.message_id,
            ATTR_PUBLISHED_AT: isoformat(self.published_at),
        }
        if self.topic_id is not None:
            wire[ATTR_TOPIC_ID] = str(self.topic_id)
        if self.traceparent:
            wire[ATTR_TRACEPARENT] = self.traceparent
        if self.schema_version is not None:
            wire[ATTR_SCHEMA_VERSION] = str(self.schema_version)
        return wire


# Not frozen, like ``Delivery``: built once per message on the hot path. Read-only.
@dataclass(slots=True)
class NewMessage:
    """A decoded, validated message the worker writes to the store."""

    topic: str
    message_id: str
    data: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    published_at: datetime = field(default_factory=utcnow)
    traceparent: str | None = None
    # Set when the producer named the topic by id (latam's own producers do).
    topic_id: int | None = None
    # From the wire, the schema version latam's API validated ``data`` against at publish
    # (0: the topic enforced none); once ingest checked it, the version it met (None or 0:
    # none, stored as NULL).
    schema_version: int | None = None


MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 100 * 366 * 86_400  # a century


def validate_retention(seconds: int | None) -> int | None:
    """A retention is a whole number of seconds from a minute to a century, or None."""
    if seconds is not None and not MIN_RETENTION_SECONDS <= seconds <= MAX_RETENTION_SECONDS:
        raise InvalidRequest(
            f"retention_seconds must be {MIN_RETENTION_SECONDS}-{MAX_RETENTION_SECONDS}"
            " or null (keep forever)",
            field="retention_seconds",
        )
    return seconds


def validate_topic_name(name: str) -> str:
    """A topic name is 1-200 characters, no control characters, trimmed."""
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= MAX_TOPIC_NAME:
        raise InvalidRequest(f"name must be 1-{MAX_TOPIC_NAME} characters", field="name")
    if any(ord(ch) < 32 for ch in cleaned):
        raise InvalidRequest("name must not contain control characters", field="name")
    return cleaned


def validate_message_id(message_id: str) -> str:
    """A message id is 1-128 printable characters."""
    if not 1 <= len(message_id) <= MAX_MESSAGE_ID or not message_id.isprintable():
        raise InvalidMessage(
            f"message id must be 1-{MAX_MESSAGE_ID} printable characters", reason="invalid_id"
        )
    return message_id


def validate_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """User attributes: bounded string map without the envelope's reserved names."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidMessage(f"at most {MAX_ATTRIBUTES} attributes", reason="invalid_attributes")
    for key, value in attributes.items():
        if key in RESERVED_ATTRIBUTES:
            raise InvalidMessage(f"attribute {key!r} is reserved", reason="invalid_attributes")
        # Bytes, not characters: Pub/Sub's limits (256 and 1,024) are on UTF-8 bytes.
        key_bytes, value_bytes = len(key.encode()), len(value.encode())
        if not 1 <= key_bytes <= MAX_ATTRIBUTE_KEY or value_bytes > MAX_ATTRIBUTE_VALUE:
            raise InvalidMessage(
                f"attribute {key[:40]!r}: keys are 1-{MAX_ATTRIBUTE_KEY} bytes and values at"
                f" most {MAX_ATTRIBUTE_VALUE} bytes in UTF-8",
                reason="invalid_attributes",
            )
    return dict(attributes)


# A number a double cannot carry exactly has 16 or more digits in a row (2**53 has 16).
# Found by mapping every digit to 9 and looking for 16 nines: a tenth of a regex's time.
_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_RUN = b"9" * 16


def loads_exact(raw: bytes) -> object:
    """Parse JSON keeping every number as written. orjson reads integers beyond 64 bits
    and long decimals as doubles (``123456789012345678901234567890`` would come back as
    ``1.2345678901234568e29``); text that may hold such a number is read by simplejson
    into ``int`` and ``Decimal`` instead, which ``encode_data`` writes back exactly.
    Raises ``ValueError`` (``orjson.JSONDecodeError`` is one) for invalid JSON."""
    value = orjson.loads(raw)
    if raw.translate(_DIGITS_AS_NINES).find(_LONG_RUN) < 0:
        return value
    return simplejson.loads(raw, use_decimal=True)


def dumps_exact(value: object) -> bytes:
    """Compact JSON, writing the ``int`` and ``Decimal`` numbers of ``loads_exact``
    exactly. Raises ``TypeError`` or ``ValueError`` for what JSON cannot hold."""
    try:
        return orjson.dumps(value)
    except TypeError:
        text: str = simplejson.dumps(
            value, use_decimal=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode()


def encode_data(data: Mapping[str, object], *, max_bytes: int) -> bytes:
    """Serialise a message's ``data`` compactly, enforcing the size limit."""
    try:
        body = dumps_exact(data)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("data is not serialisable as JSON", reason="invalid_json") from exc
    if len(body) > max_bytes:
        raise InvalidMessage(f"data is larger than {max_bytes} bytes", reason="too_large")
    return body


def decode_envelope(
    body: bytes,
    attributes: Mapping[str, str],
    *,
    fallback_id: str,
    fallback_published_at: datetime,
    max_bytes: int,
) -> NewMessage:
    """Turn a broker delivery into a ``NewMessage`` or raise ``InvalidMessage``.

    Producers that never heard of latam only set the ``topic`` (or ``latam_topic``)
    attribute; the broker's own message id and publish time stand in for the missing
    envelope fields.
    """
    topic = (attributes.get(ATTR_TOPIC) or attributes.get(ATTR_TOPIC_ALIAS) or "").strip()
    if not topic:
        raise InvalidMessage("message has no 'topic' attribute", reason="missing_topic")
    if len(topic) > MAX_TOPIC_NAME or (
        not topic.isprintable() and any(ord(ch) < 32 for ch in topic)
    ):
        # No topic can have this name (validate_topic_name), and some databases refuse
        # to even look it up (PostgreSQL and a NUL).
        raise InvalidMessage("the 'topic' attribute is not a topic name", reason="invalid_topic")
    if len(body) > max_bytes:
        raise InvalidMessage(f"body is larger than {max_bytes} bytes", reason="too_large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("body is not valid JSON", reason="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidMessage("body is not a JSON object", reason="not_object")
    published_at = fallback_published_at
    if raw_time := attributes.get(ATTR_PUBLISHED_AT):
        try:
            published_at = parse_timestamp(raw_time)
        except (ValueError, OverflowError) as exc:
            # OverflowError: a valid ISO 8601 text outside what UTC can hold
            # (9999-12-31T23:59:59-01:00).
            raise InvalidMessage(
                "published_at is not an ISO 8601 time within years 1-9999 UTC",
                reason="invalid_timestamp",
            ) from exc
    topic_id = None
    if raw_id := attributes.get(ATTR_TOPIC_ID):
        if not (raw_id.isascii() and raw_id.isdigit() and 0 < int(raw_id) < 2**63):
            raise InvalidMessage(
                "the 'topic_id' attribute is not a topic id", reason="invalid_topic"
            )
        topic_id = int(raw_id)
    user_attributes = {k: v for k, v in attributes.items() if k not in RESERVED_ATTRIBUTES}
    # Only a hint (ingest decides what to validate against): garbage is ignored.
    raw_version = attributes.get(ATTR_SCHEMA_VERSION, "")
    schema_version = None
    if raw_version.isascii() and raw_version.isdigit() and int(raw_version) < 2**31:
        schema_version = int(raw_version)
    return NewMessage(  # positional: a third of the keyword call's cost, once per message
        topic,
        validate_message_id(attributes.get(ATTR_MESSAGE_ID) or fallback_id),
        body.decode(),  # orjson.loads accepted it, so it is valid JSON: stored as sent
        user_attributes,
        published_at,
        attributes.get(ATTR_TRACEPARENT),
        topic_id,
        schema_version,
    )


def encode_cursor(topic_id: int, seq: int) -> str:
    """An opaque page cursor bound to one topic."""
    raw = f"v1:{topic_id}:{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, topic_id: int) -> int:
    """The sequence number a cursor points after; rejects garbled or foreign cursors."""
    position = decode_position(cursor, topic_id=topic_id)
    if position.published_at is not None:
        raise InvalidRequest("cursor is not valid", field="cursor")
    return position.seq


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page of messages starts.

    Without a time window pages walk ingest order, and a page starts after ``seq``. With
    ``since``/``until`` they walk publish-time order, ``(published_at, seq)``, so that one
    index serves the window and the order at any position in the topic (a producer may
    set ``published_at`` in the past, so publish time and ingest order can disagree); such
    a page starts after the pair.
    """

    seq: int = 0
    published_at: datetime | None = None
    # The digest of the filters of the page (``filters.Filters.key``), "" for none: a
    # cursor continues only a page of the same filters.
    filters: str = ""

    def encode(self, topic_id: int) -> str:
        """The opaque cursor, bound to one topic (v1: ingest order, v2: publish time)
        and, with a ``:f<digest>`` suffix, to the page's filters."""
        if self.published_at is None and not self.filters:
            return encode_cursor(topic_id, self.seq)
        if self.published_at is None:
            raw = f"v1:{topic_id}:{self.seq}"
        else:
            micros = (self.published_at - EPOCH) // timedelta(microseconds=1)
            raw = f"v2:{topic_id}:{micros}:{self.seq}"
        if self.filters:
            raw += f":f{self.filters}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - EPOCH) // timedelta(
    microseconds=1
)
MIN_MICROS = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


FILTER_KEY = re.compile(r"[0-9a-f]{12}")


def decode_position(cursor: str, *, topic_id: int) -> Position:
    """The position a cursor points after; rejects garbled or foreign cursors."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        version, topic, *rest = base64.urlsafe_b64decode(padded).decode().split(":")
        filters = rest.pop()[1:] if rest and rest[-1].startswith("f") else ""
        if filters and not FILTER_KEY.fullmatch(filters):
            raise ValueError("not a filter digest")
        topic_value, *numbers = (int(topic), *(int(part) for part in rest))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not valid", field="cursor") from exc
    shape = {"v1": 1, "v2": 2}.get(version)
    if shape != len(numbers) or not 0 <= numbers[-1] < 2**63:
        raise InvalidRequest("cursor is not valid", field="cursor")
    if topic_value != topic_id:
        raise InvalidRequest("cursor does not belong to this topic", field="cursor")
    if shape == 1:
        return Position(numbers[0], filters=filters)
    micros, seq = numbers
    if not MIN_MICROS <= micros <= MAX_MICROS:
        raise InvalidRequest("cursor is not valid", field="cursor")
    return Position(seq, EPOCH + timedelta(microseconds=micros), filters)


def window_start(since: datetime | None, after: Position) -> tuple[datetime, int] | None:
    """The ``(published_at, seq)`` a time-window page starts after: the later of the
    window's start (every row at ``since`` included, as seqs start at 1) and the cursor."""
    bounds = [(since, 0)] if since is not None else []
    if after.published_at is not None:
        bounds.append((after.published_at, after.seq))
    return max(bounds) if bounds else None
