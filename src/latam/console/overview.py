"""The overview page's figures, from the service and this instance's metrics.

Each figure says where it comes from, and is ``None`` (shown as unknown, with why) when
it cannot be known here: a backlog Pub/Sub does not report, an ingest rate in an API
process with no worker beside it. Computed at most every ``TTL_SECONDS`` per process
(the page refreshes every 5 s, whoever has it open); the dead-letter count by reason, a
scan of up to 100,000 letters, at most every ``LETTERS_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from latam.broker.base import Backlog
from latam.console import readings
from latam.console.readings import History, Reading
from latam.domain import utcnow
from latam.errors import LatamError, NotFound
from latam.service import LetterSummary, Service
from latam.status import StatusPage
from latam.status.slos import Catalog, load_catalog

TTL_SECONDS = 4.0
LETTERS_SECONDS = 15.0
CHART_MINUTES = 60
CHART_TOPICS = 20  # topics whose minutes the chart adds up, the most recently published to
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class SloLine:
    name: str
    title: str
    objective: float
    state: str  # ok, burning, exhausted or unknown
    reason: str | None = None
    sli: float | None = None
    budget_left: float | None = None


@dataclass(frozen=True, slots=True)
class Figures:
    generated_at: datetime
    health: dict[str, str | None]
    ingest_rate: float | None  # messages stored per second
    ingest_note: str
    freshness_p99: float | None
    freshness_note: str
    backlog: Backlog | None
    backlog_note: str
    letters: LetterSummary | None
    letters_note: str
    slos: tuple[SloLine, ...]
    slo_note: str
    per_minute: tuple[tuple[datetime, int], ...]
    chart_note: str


@dataclass
class Overview:
    service: Service
    status_page: StatusPage | None = None
    catalog: Catalog = field(default_factory=load_catalog)
    history: History = field(default_factory=History)
    _cached: tuple[float, Figures] | None = None
    _letters: tuple[float, LetterSummary | None, str] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def figures(self) -> Figures:
        async with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < TTL_SECONDS:
                return cached[1]
            found = await self._compute()
            self._cached = (time.monotonic(), found)
            return found

    async def _compute(self) -> Figures:
        now = utcnow()
        reading = await self.service.in_store_thread(readings.read)
        base = self.history.add(reading)
        health = await self.service.in_store_thread(self.service.readiness)
        backlog, backlog_note = await self.service.in_store_thread(self._backlog)
        letters, letters_note = await self.letter_summary()
        per_minute, chart_note = await self.service.in_store_thread(self._per_minute, now)
        slos, slo_note = await self._slos(reading)
        rate, rate_note = _ingest_rate(reading, base)
        p99, p99_note = _freshness(reading, base)
        return Figures(
            generated_at=now,
            health=health,
            ingest_rate=rate,
            ingest_note=rate_note,
            freshness_p99=p99,
            freshness_note=p99_note,
            backlog=backlog,
            backlog_note=backlog_note,
            letters=letters,
            letters_note=letters_note,
            slos=slos,
            slo_note=slo_note,
            per_minute=per_minute,
            chart_note=chart_note,
        )

    def _backlog(self) -> tuple[Backlog | None, str]:
        try:
            found = self.service.backlog()
        except LatamError as exc:
            return None, f"unknown: the broker does not answer ({exc.detail})"
        if found is None:
            return None, (
                "unknown: this broker does not report its backlog (on Pub/Sub, see the"
                " subscription's num_undelivered_messages and oldest_unacked_message_age)"
            )
        return found, f"messages waiting on the broker ({self.service.broker.name})"

    def forget_letters(self) -> None:
        """Count the dead letters again next time (some were just replayed or purged)."""
        self._letters = None
        self._cached = None

    async def letter_summary(self) -> tuple[LetterSummary | None, str]:
        """Dead letters by reason and topic, counted at most ``LETTERS_SECONDS`` ago."""
        last = self._letters
        if last is None or time.monotonic() - last[0] >= LETTERS_SECONDS:
            try:
                summary = await self.service.in_store_thread(self.service.dead_letter_summary)
                note = "" if summary.complete else f"the first {summary.scanned:,} counted"
                last = self._letters = (time.monotonic(), summary, note)
            except LatamError as exc:
                last = (time.monotonic(), None, f"unknown: {exc.detail}")
        return last[1], last[2]

    def _per_minute(self, now: datetime) -> tuple[tuple[tuple[datetime, int], ...], str]:
        """Messages per minute of publish time over the last hour, from the stats."""
        first = now.replace(second=0, microsecond=0) - (CHART_MINUTES - 1) * MINUTE
        counts = {first + i * MINUTE: 0 for i in range(CHART_MINUTES)}
        try:
            totals = self.service.all_stats()
            recent = sorted(
                (t for t in totals if t.last_published_at and t.last_published_at >= first),
                key=lambda t: t.last_published_at or first,
                reverse=True,
            )
            for topic in recent[:CHART_TOPICS]:
                try:
                    buckets = self.service.topic_stats(
                        topic_id=topic.topic_id, bucket="minute", since=first
                    )
                except NotFound:  # deleted meanwhile
                    continue
                for bucket in buckets:
                    if bucket.start in counts:
                        counts[bucket.start] += bucket.count
        except LatamError as exc:
            return (), f"unknown: {exc.detail}"
        note = ""
        if len(recent) > CHART_TOPICS:
            note = f"the {CHART_TOPICS} of {len(recent)} topics published to most recently"
        return tuple(counts.items()), note

    async def _slos(self, reading: Reading) -> tuple[tuple[SloLine, ...], str]:
        page = self.status_page
        if page is not None and page.source is not None:
            snapshot = await page.snapshot()
            lines = tuple(
                SloLine(
                    s.slo.name,
                    s.slo.title,
                    s.slo.objective,
                    s.state,
                    s.reason,
                    s.sli,
                    s.error_budget_remaining,
                )
                for s in snapshot.slos
            )
            return lines, f"from Prometheus, over {snapshot.period_days} days"
        lines = tuple(
            _local_slo(slo.name, slo.title, slo.objective, reading) for slo in self.catalog.slos
        )
        return lines, (
            "from this instance's own counters since its processes started: no Prometheus"
            " is configured (LATAM_STATUS_PROMETHEUS_URL), so the budget over the SLO"
            " period cannot be known here"
        )


def _ingest_rate(reading: Reading, base: Reading | None) -> tuple[float | None, str]:
    if reading.stored is None:
        return None, (
            "unknown here: no worker reports to this process (it runs apart); the chart"
            " shows what the store holds"
        )
    if base is None:
        return None, "measuring: known from the next refresh on"
    seconds = reading.at - base.at
    rate = ((reading.stored or 0.0) - (base.stored or 0.0)) / seconds
    return rate, f"stored per second over the last {seconds:.0f} s"


def _freshness(reading: Reading, base: Reading | None) -> tuple[float | None, str]:
    if not reading.freshness:
        return None, "unknown here: no worker reports to this process"
    if base is None:
        found = readings.quantile(0.99, reading.freshness)
        return found, "publish to stored, since the processes started"
    window = readings.difference(reading.freshness, base.freshness)
    seconds = reading.at - base.at
    found = readings.quantile(0.99, window)
    if found is None:
        return None, f"no message stored in the last {seconds:.0f} s"
    return found, f"publish to stored, over the last {seconds:.0f} s"


def _local_slo(name: str, title: str, objective: float, reading: Reading) -> SloLine:
    good_total = {
        "availability": (reading.requests - reading.failed, reading.requests),
        "read-latency": (reading.fast_reads, reading.reads),
        "freshness": reading.stored_fresh,
    }.get(name)
    if good_total is None:
        return SloLine(name, title, objective, "unknown", "needs Prometheus")
    good, total = good_total
    if total <= 0:
        return SloLine(name, title, objective, "unknown", "no events yet")
    bad = 1 - good / total
    left = 1 - bad / round(1 - objective, 12)
    return SloLine(name, title, objective, "ok" if left > 0 else "exhausted", None, 1 - bad, left)
