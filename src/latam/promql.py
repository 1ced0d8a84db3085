"""The port to a PromQL query endpoint: what the status page needs from Prometheus.

``prometheus.PrometheusSource`` is the adapter (a Prometheus HTTP API, or Google Cloud
Managed Service for Prometheus); tests use fakes with the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class QueryFailed(Exception):
    """A query gave no usable answer. ``reason`` is short and safe to show anyone: it
    never carries an exception's text, a URL or a host name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PromqlSource(Protocol):
    """Evaluates instant queries."""

    async def evaluate(self, queries: Sequence[str]) -> list[list[float] | QueryFailed]:
        """Each query's sample values now, in the order given (an empty list: no series;
        a value may be NaN, e.g. 0/0), or why it has none; the queries run concurrently
        and none raises."""
        ...
