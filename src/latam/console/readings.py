"""The overview's figures from this instance's own metrics, without Prometheus.

``metrics.families`` reads the counters and histograms every process of the instance
writes (the API's and, under ``latam serve``, the workers': multiprocess mode). A
``Reading`` keeps the few totals the overview needs; ``History`` keeps the readings of
the last ``WINDOW_SECONDS`` so a rate or a quantile is over a recent window (the
difference between now and the oldest reading in it), not since start-up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from latam import metrics

WINDOW_SECONDS = 300.0
MIN_WINDOW_SECONDS = 4.0
# The routes the HTTP SLOs leave out, as deploy/slo/slos.yaml does: probes and scrapes.
NOT_IN_SLOS = frozenset({"/healthz", "/readyz", "/metrics", "/status", "/status.json"})
FAST_SECONDS = 0.3  # read-latency SLO threshold
FRESH_SECONDS = 60.0  # freshness SLO threshold


@dataclass(frozen=True, slots=True)
class Reading:
    """Totals since each process started, summed over the instance's processes."""

    at: float
    stored: float | None  # messages stored; None when no process here stores any
    freshness: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count)
    requests: float = 0.0  # API requests the SLOs count
    failed: float = 0.0  # of them, 5xx
    reads: float = 0.0  # GET requests the SLOs count
    fast_reads: float = 0.0  # of them, served within FAST_SECONDS

    @property
    def stored_fresh(self) -> tuple[float, float]:
        """(stored within FRESH_SECONDS, stored) from the freshness histogram."""
        total = self.freshness[-1][1] if self.freshness else 0.0
        within = max(
            (count for bound, count in self.freshness if bound <= FRESH_SECONDS), default=0
        )
        return within, total


def read(families: Iterable[Metric] | None = None, *, now: float | None = None) -> Reading:
    """The current totals (``families``: ``metrics.families()`` when None)."""
    stored: float | None = None
    buckets: dict[float, float] = {}
    requests = failed = reads = fast = 0.0
    for family in metrics.families() if families is None else families:
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == "latam_messages_stored_total":
                stored = (stored or 0.0) + value
            elif sample.name == "latam_message_freshness_seconds_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
            elif labels.get("route", "") in NOT_IN_SLOS:
                continue
            elif sample.name == "latam_http_requests_total":
                requests += value
                failed += value if labels.get("status_class") == "5xx" else 0.0
            elif sample.name == "latam_http_request_duration_seconds_bucket" and (
                labels.get("method") == "GET"
            ):
                bound = float(labels["le"])
                reads += value if math.isinf(bound) else 0.0
                fast += value if bound == FAST_SECONDS else 0.0
    return Reading(
        time.monotonic() if now is None else now,
        stored,
        tuple(sorted(buckets.items())),
        requests,
        failed,
        reads,
        fast,
    )


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, interpolated within a bucket as
    Prometheus's ``histogram_quantile`` does; None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bound: that bound is all one can say
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def difference(
    now: tuple[tuple[float, float], ...], then: tuple[tuple[float, float], ...]
) -> tuple[tuple[float, float], ...]:
    """Histogram buckets observed between two readings."""
    before: Mapping[float, float] = dict(then)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in now)


@dataclass
class History:
    """The readings of the last ``WINDOW_SECONDS``, oldest first."""

    readings: deque[Reading] = field(default_factory=deque)

    def add(self, reading: Reading) -> Reading | None:
        """Keep ``reading``; the oldest kept one at least ``MIN_WINDOW_SECONDS`` older to
        compare it with (None: none yet, or a process restarted and its totals fell)."""
        while self.readings and reading.at - self.readings[0].at > WINDOW_SECONDS:
            self.readings.popleft()
        base = self.readings[0] if self.readings else None
        self.readings.append(reading)
        if base is None or reading.at - base.at < MIN_WINDOW_SECONDS:
            return None
        if (reading.stored or 0.0) < (base.stored or 0.0) or reading.requests < base.requests:
            self.readings = deque([reading])
            return None
        return base
