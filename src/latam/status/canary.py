"""The synthetic canary's last 24 hours on the status page, read from the store.

Each round of ``latam canary`` stores one marked message in the canary's topic. Per
clock hour (the current one and the 23 before it, by publish time) the page shows the
rounds stored (the topic's hourly stats) and the delay from publish to store of up to
``HOUR_SAMPLE`` of them (``sampled`` when there were more); the latest round is found by
reading ever shorter windows back from now (``TAIL_WINDOWS``). Every read goes through
the service's read paths, and a computation reads at most
``HOURS * HOUR_SAMPLE + len(TAIL_WINDOWS) * TAIL_LIMIT`` = 3,000 rows, however often
the canary runs (every 30 s makes 120 rounds an hour).

State: ``ok`` when a round landed within ``STALE_SPACINGS`` typical spacings (the median
time between consecutive rounds), ``stale`` otherwise, ``absent`` without the topic,
``unknown`` when the store cannot be read.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from latam.domain import isoformat
from latam.errors import LatamError, NotFound, TransientError
from latam.service import Service
from latam.storage.port import StoredMessage

HOURS = 24
HOUR = timedelta(hours=1)
HOUR_SAMPLE = 120
TAIL_WINDOWS = (600, 60, 6)  # seconds back from now, until one is read whole
TAIL_LIMIT = 40
STALE_SPACINGS = 3
MIN_STALE_SECONDS = 10.0  # floor of the staleness limit: publish to store takes time
DEFAULT_SPACING = 120.0  # until two rounds are seen: the longest `latam canary --interval`


@dataclass(frozen=True, slots=True)
class HourBucket:
    start: datetime
    rounds: int
    p50_delay_seconds: float | None = None
    max_delay_seconds: float | None = None
    sampled: bool = False  # the delays are from the hour's first HOUR_SAMPLE rounds

    def as_json(self) -> dict[str, Any]:
        return {
            "start": isoformat(self.start),
            "rounds": self.rounds,
            "p50_delay_seconds": _round(self.p50_delay_seconds),
            "max_delay_seconds": _round(self.max_delay_seconds),
            "sampled": self.sampled,
        }


@dataclass(frozen=True, slots=True)
class CanaryStatus:
    state: str  # ok, stale, absent or unknown
    reason: str | None = None
    last_round_at: datetime | None = None
    typical_spacing_seconds: float | None = None
    stale_after_seconds: float | None = None
    p50_delay_seconds: float | None = None
    max_delay_seconds: float | None = None
    buckets: tuple[HourBucket, ...] = field(default=())

    @property
    def rounds_24h(self) -> int:
        return sum(bucket.rounds for bucket in self.buckets)

    def as_json(self) -> dict[str, Any]:
        last = self.last_round_at
        return {
            "state": self.state,
            "reason": self.reason,
            "last_round_at": None if last is None else isoformat(last),
            "typical_spacing_seconds": _round(self.typical_spacing_seconds),
            "stale_after_seconds": _round(self.stale_after_seconds),
            "rounds_24h": self.rounds_24h,
            "p50_delay_seconds": _round(self.p50_delay_seconds),
            "max_delay_seconds": _round(self.max_delay_seconds),
            "buckets": [bucket.as_json() for bucket in self.buckets],
        }


def read_canary(service: Service, topic: str, *, now: datetime) -> CanaryStatus:
    """The canary's state and hourly history as of ``now`` (blocking store reads)."""
    first = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - (HOURS - 1) * HOUR
    empty = tuple(HourBucket(first + i * HOUR, 0) for i in range(HOURS))
    try:
        topic_id = service.store.topic_ids([topic]).get(topic)
        if topic_id is None:
            return CanaryStatus("absent", "no canary runs", buckets=empty)
        return _history(service, topic_id, first, now)
    except NotFound:  # deleted while being read
        return CanaryStatus("absent", "no canary runs", buckets=empty)
    except TransientError:
        return CanaryStatus("unknown", "store unavailable")
    except LatamError:
        return CanaryStatus("unknown", "store read failed")


def _history(service: Service, topic_id: int, first: datetime, now: datetime) -> CanaryStatus:
    stats = service.topic_stats(topic_id=topic_id, bucket="hour", since=first, until=None)
    counts = {_utc(bucket.start): bucket.count for bucket in stats}
    buckets: list[HourBucket] = []
    rows: list[StoredMessage] = []
    gaps: list[float] = []
    for hour in (first + i * HOUR for i in range(HOURS)):
        bucket, read = _hour(service, topic_id, hour, counts.get(hour, 0))
        buckets.append(bucket)
        rows += read
        gaps += _gaps(read)
    last = _latest([*rows, *_tail(service, topic_id, now)])
    delays = [_delay(row) for row in rows]
    spacing = statistics.median(gaps) if gaps else None
    found = CanaryStatus(
        "ok",
        None,
        last,
        spacing,
        max(STALE_SPACINGS * (spacing or DEFAULT_SPACING), MIN_STALE_SECONDS),
        statistics.median(delays) if delays else None,
        max(delays, default=None),
        tuple(buckets),
    )
    if last is None:
        return _stale(found, f"no round in the last {HOURS} hours")
    age = (now - last).total_seconds()
    if found.stale_after_seconds is not None and age > found.stale_after_seconds:
        return _stale(found, f"no round for {_duration(age)}")
    return found


def _hour(
    service: Service, topic_id: int, hour: datetime, count: int
) -> tuple[HourBucket, list[StoredMessage]]:
    """The bucket of ``hour`` with ``count`` rounds (from the stats), and the rows read
    for its delays: up to ``HOUR_SAMPLE``, none when the stats show no round."""
    if not count:
        return HourBucket(hour, 0), []
    page = service.read_messages(
        topic_id=topic_id, limit=HOUR_SAMPLE, since=hour, until=hour + HOUR
    )
    delays = [_delay(row) for row in page.items]
    bucket = HourBucket(
        hour,
        max(count, len(page.items)),
        statistics.median(delays) if delays else None,
        max(delays, default=None),
        sampled=page.next_cursor is not None,
    )
    return bucket, page.items


def _tail(service: Service, topic_id: int, now: datetime) -> list[StoredMessage]:
    """The newest rounds read: each window back from now is read up to ``TAIL_LIMIT``
    rows, shorter and shorter until one is read whole (its last row is then the latest
    round stored)."""
    rows: list[StoredMessage] = []
    for seconds in TAIL_WINDOWS:
        page = service.read_messages(
            topic_id=topic_id, limit=TAIL_LIMIT, since=now - timedelta(seconds=seconds)
        )
        rows += page.items
        if page.next_cursor is None:
            break
    return rows


def _stale(found: CanaryStatus, reason: str) -> CanaryStatus:
    return replace(found, state="stale", reason=reason)


def _delay(row: StoredMessage) -> float:
    """Publish to store, in seconds (never negative: the clocks of two hosts may differ)."""
    return max((row.ingested_at - row.published_at).total_seconds(), 0.0)


def _gaps(rows: Sequence[StoredMessage]) -> list[float]:
    times = [row.published_at for row in rows]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def _latest(rows: Sequence[StoredMessage]) -> datetime | None:
    return max((_utc(row.published_at) for row in rows), default=None)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
