"""Per-caller rate limiting of the API: a token bucket per key id or client address."""

from __future__ import annotations

import threading
import time

MAX_CALLERS = 100_000  # buckets kept; past it, the ones refilled to full are dropped


class RateLimiter:
    """A token bucket per caller (key id or client address), in this process."""

    def __init__(self, *, rate: float, burst: int, max_callers: int = MAX_CALLERS) -> None:
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str, cost: float = 1.0) -> float:
        """0 when allowed; otherwise the seconds to wait before a retry can succeed."""
        return self._take(caller, cost)

    def refund(self, caller: str, cost: float = 1.0) -> None:
        """Give back tokens an ``acquire`` took for something that did not count."""
        if self.rate <= 0:
            return
        with self._lock:
            if (entry := self._buckets.get(caller)) is not None:
                self._buckets[caller] = (min(float(self.burst), entry[0] + cost), entry[1])

    def charge(self, caller: str, cost: float) -> None:
        """Take ``cost`` tokens for work already done, into debt if need be (down to
        ``-burst``): the caller's next ``acquire`` waits until the debt is paid back."""
        if self.rate <= 0 or cost <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            self._store(caller, max(-float(self.burst), tokens - cost), now)

    def waiting(self, caller: str) -> float:
        """What ``acquire`` would answer for one token, without taking it."""
        return self._take(caller, 1.0, take=False)

    def _take(self, caller: str, cost: float, *, take: bool = True) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= cost:
                if take:
                    self._store(caller, tokens - cost, now)
                return 0.0
            if take:
                self._store(caller, tokens, now)
            return (cost - tokens) / self.rate

    def _store(self, caller: str, tokens: float, now: float) -> None:
        if caller not in self._buckets and len(self._buckets) >= self.max_callers:
            # A bucket untouched for long enough to refill is the same as no bucket.
            full_after = self.burst / self.rate
            self._buckets = {
                name: entry for name, entry in self._buckets.items() if now - entry[1] < full_after
            }
            if len(self._buckets) >= self.max_callers:
                # A flood of new callers within one refill: keep the most recent half.
                recent = sorted(self._buckets.items(), key=lambda item: item[1][1])
                self._buckets = dict(recent[len(recent) // 2 :])
        self._buckets[caller] = (tokens, now)

    def __len__(self) -> int:
        return len(self._buckets)
