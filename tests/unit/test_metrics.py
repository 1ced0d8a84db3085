"""``observe_many`` must leave a histogram exactly as repeated ``observe`` calls do."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from latam.metrics import FRESHNESS_BUCKETS, observe_many


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("h", "test", buckets=FRESHNESS_BUCKETS, registry=registry)


def test_observe_many_equals_repeated_observe() -> None:
    cases = [(0.03, 7), (0.05, 3), (0.7, 500), (400.0, 2), (5000.0, 1), (2.5, 0)]
    one_registry, one = _histogram()
    many_registry, many = _histogram()
    for amount, count in cases:
        for _ in range(count):
            one.observe(amount)
        observe_many(many, amount, count)
    expected, got = _samples(one_registry), _samples(many_registry)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got[("h_bucket", "1.0")] == 510
    assert got[("h_count", "")] == 513


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every sample but the creation time, keyed by name and bucket bound."""
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }
