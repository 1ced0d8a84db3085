"""The status page's snapshot: computed at most once per ``TTL_SECONDS`` per process.

The page is public and unauthenticated, so however many ask, a process computes one
snapshot at a time and reuses it for ``TTL_SECONDS``: the metrics source sees
``2 x SLOs`` queries and the store about 30 bounded reads per process per interval.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anyio.to_thread import run_sync

from latam.domain import isoformat, utcnow
from latam.promql import PromqlSource, QueryFailed
from latam.service import Service
from latam.status.canary import CanaryStatus, read_canary
from latam.status.slos import SHORT_WINDOW, Answer, Catalog, SloStatus, judge, load_catalog

log = logging.getLogger("latam")
TTL_SECONDS = 30.0
STORE_TIMEOUT = 5.0  # seconds the canary's history may take to read


@dataclass(frozen=True, slots=True)
class Snapshot:
    generated_at: datetime
    status: str  # ok, degraded or unknown
    period_days: int
    slos: tuple[SloStatus, ...]
    canary: CanaryStatus

    def as_json(self) -> dict[str, Any]:
        return {
            "generated_at": isoformat(self.generated_at),
            "status": self.status,
            "period_days": self.period_days,
            "slos": [slo.as_json() for slo in self.slos],
            "canary": self.canary.as_json(),
        }


def overall(slos: tuple[SloStatus, ...], canary: CanaryStatus) -> str:
    """``degraded`` when any SLO burns or is exhausted or the canary is stale; ``ok``
    when there are SLOs and every one and the canary are ok; else ``unknown``."""
    if any(s.state in ("burning", "exhausted") for s in slos) or canary.state == "stale":
        return "degraded"
    if slos and all(s.state == "ok" for s in slos) and canary.state == "ok":
        return "ok"
    return "unknown"


class StatusPage:
    """The snapshot of one process: SLO states from ``source`` (None: not configured),
    the history of the canary publishing to ``canary_topic`` from ``service``'s store."""

    def __init__(
        self,
        service: Service,
        source: PromqlSource | None,
        *,
        canary_topic: str,
        catalog: Catalog | None = None,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.service = service
        self.source = source
        self.canary_topic = canary_topic
        self.catalog = catalog or load_catalog()
        self.ttl = ttl
        self._clock = clock
        self._now = now
        self._lock = asyncio.Lock()
        self._cached: tuple[float, Snapshot] | None = None
        self._failing: frozenset[str] = frozenset()

    def age(self) -> float:
        """Seconds since the current snapshot was computed (0 without one)."""
        return 0.0 if self._cached is None else max(self._clock() - self._cached[0], 0.0)

    async def snapshot(self) -> Snapshot:
        """The current snapshot; computed when older than ``ttl``, by one caller while
        the others wait for it."""
        if (fresh := self._fresh()) is not None:
            return fresh
        async with self._lock:
            if (fresh := self._fresh()) is not None:
                return fresh
            made = self._clock()
            snapshot = await self.compute()
            self._cached = (made, snapshot)
            return snapshot

    def _fresh(self) -> Snapshot | None:
        cached = self._cached
        if cached is not None and self._clock() - cached[0] < self.ttl:
            return cached[1]
        return None

    async def compute(self) -> Snapshot:
        now = self._now()
        slos, canary = await asyncio.gather(self._slos(), self._canary(now))
        return Snapshot(now, overall(slos, canary), self.catalog.period_days, slos, canary)

    async def _slos(self) -> tuple[SloStatus, ...]:
        catalog = self.catalog
        windows = (catalog.period_window, SHORT_WINDOW)
        answers: list[Answer] = [None] * (2 * len(catalog.slos))
        if self.source is not None:
            queries = [slo.query(window) for slo in catalog.slos for window in windows]
            try:
                answers = list(await self.source.evaluate(queries))
                if len(answers) != len(queries):
                    raise ValueError(f"{len(answers)} answers to {len(queries)} queries")
            except Exception:  # the port raises nothing; a bug must not take the page down
                log.exception("status: the metrics source failed")
                answers = [QueryFailed("metrics query failed")] * len(queries)
        self._log_failures({a.reason for a in answers if isinstance(a, QueryFailed)})
        return tuple(
            judge(slo, answers[2 * i], answers[2 * i + 1], period_days=catalog.period_days)
            for i, slo in enumerate(catalog.slos)
        )

    async def _canary(self, now: datetime) -> CanaryStatus:
        read = functools.partial(read_canary, self.service, self.canary_topic, now=now)
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                return await run_sync(
                    read, abandon_on_cancel=True, limiter=self.service.store_limiter
                )
        except TimeoutError:
            return CanaryStatus("unknown", "store timed out")
        except Exception:  # read_canary answers the store's own errors itself
            log.exception("status: reading the canary's history failed")
            return CanaryStatus("unknown", "store read failed")

    def _log_failures(self, reasons: set[str]) -> None:
        """A line when the set of failing reasons changes, not one every ``ttl``."""
        failing = frozenset(reasons)
        if failing != self._failing:
            if failing:
                log.warning("status: SLO queries failing: %s", "; ".join(sorted(failing)))
            else:
                log.info("status: SLO queries answer again")
            self._failing = failing
