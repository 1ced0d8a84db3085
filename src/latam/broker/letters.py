"""Dead letters as attributes on a broker message: the one format Pub/Sub and NATS share.

A dead letter is the original body with the original attributes plus four of its own:
``reason``, ``delivery_attempts``, ``source_published_at`` (when the original was
published) and ``dead_lettered_at``. ``stamp`` writes them, ``parse`` reads them back
into a ``DeadLetter`` and ``original`` strips them for a replay. Adapters that keep
dead letters in a table of their own (the embedded queue) have columns instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from latam.broker.base import DeadLetter, Delivery
from latam.domain import ATTR_MESSAGE_ID, ATTR_TOPIC, isoformat, parse_timestamp

REASON = "reason"
ATTEMPTS = "delivery_attempts"
SOURCE_TIME = "source_published_at"
DEAD_AT = "dead_lettered_at"
# The broker's id of the original delivery: two copies with the same one are one dead
# letter set aside twice (the process died between the copy and settling the original).
SOURCE_ID = "source_message_id"
# Earlier releases wrote the source time under this name on Pub/Sub; still read.
LEGACY_SOURCE_TIME = "source_publish_time"
META = frozenset({REASON, ATTEMPTS, SOURCE_TIME, DEAD_AT, SOURCE_ID, LEGACY_SOURCE_TIME})
MAX_REASON = 1000  # bytes of a reason kept (Pub/Sub bounds attribute values at 1,024)


def stamp(delivery: Delivery, reason: str, attempts: int) -> dict[str, str]:
    """The attributes of a dead-letter copy of ``delivery``."""
    return {
        **delivery.attributes,
        REASON: truncate(reason, MAX_REASON),
        ATTEMPTS: str(attempts),
        SOURCE_TIME: isoformat(delivery.published_at),
        DEAD_AT: isoformat(datetime.now(UTC)),
        SOURCE_ID: delivery.broker_message_id,
    }


def truncate(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never inside a character."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def original(attributes: Mapping[str, str], *, foreign: Iterable[str] = ()) -> dict[str, str]:
    """The original message's attributes: without ours and without the broker's own
    (names starting with one of the ``foreign`` prefixes)."""
    prefixes = tuple(foreign)
    return {
        k: v
        for k, v in attributes.items()
        if k not in META and not (prefixes and k.startswith(prefixes))
    }


def parse(
    dead_letter_id: str,
    body: bytes,
    attributes: Mapping[str, str],
    *,
    dead_lettered_at: datetime | None = None,
    foreign: Iterable[str] = (),
    defaults: Mapping[str, str] | None = None,
) -> DeadLetter:
    """A ``DeadLetter`` from a stamped message.

    ``dead_lettered_at`` is the broker's own time of the copy where it has one;
    ``defaults`` stand in for stamp attributes a message lacks (a copy the broker made
    under its own dead-letter policy carries its facts under other names).
    """
    stamped = {**(defaults or {}), **{k: v for k, v in attributes.items() if k in META}}
    dead_at = dead_lettered_at or _time(stamped.get(DEAD_AT, ""), datetime.now(UTC))
    source = stamped.get(SOURCE_TIME) or stamped.get(LEGACY_SOURCE_TIME, "")
    attempts = stamped.get(ATTEMPTS, "0")
    kept = original(attributes, foreign=foreign)
    return DeadLetter(
        id=dead_letter_id,
        topic=kept.get(ATTR_TOPIC, ""),
        message_id=kept.get(ATTR_MESSAGE_ID, ""),
        body=bytes(body),
        attributes=kept,
        reason=stamped.get(REASON, "unknown"),
        delivery_attempts=int(attempts) if attempts.isdigit() else 0,
        published_at=_time(source, dead_at),
        dead_lettered_at=dead_at,
    )


def _time(value: str, fallback: datetime) -> datetime:
    try:
        return parse_timestamp(value) if value else fallback
    except ValueError:
        return fallback
