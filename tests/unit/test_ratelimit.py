"""The API's token buckets: refusals, refunds and the bound on how many are kept."""

from __future__ import annotations

from latam.api.ratelimit import RateLimiter


def test_a_bucket_refuses_past_its_burst_and_a_refund_gives_a_token_back() -> None:
    limiter = RateLimiter(rate=0.001, burst=2)
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") > 0
    assert limiter.waiting("a") > 0
    limiter.refund("a")
    assert limiter.waiting("a") == 0.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0, "callers have their own buckets"


def test_refunds_never_exceed_the_burst() -> None:
    limiter = RateLimiter(rate=0.001, burst=2)
    limiter.acquire("a")
    for _ in range(5):
        limiter.refund("a")
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") > 0


def test_the_buckets_kept_are_bounded() -> None:
    limiter = RateLimiter(rate=1000.0, burst=1, max_callers=100)
    for n in range(1_000):
        limiter.acquire(f"caller-{n}")
    assert len(limiter) <= 100
    busy = RateLimiter(rate=0.001, burst=1, max_callers=100)
    for n in range(1_000):
        busy.acquire(f"caller-{n}")
    assert len(busy) <= 100, "under a flood of new callers the oldest half goes"
    assert busy.acquire("caller-999") > 0, "a recent caller keeps its empty bucket"
