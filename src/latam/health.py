"""Dependency checks shared by the API's ``/readyz`` and the worker's gauges."""

from __future__ import annotations

from latam import metrics
from latam.broker.base import Broker
from latam.errors import LatamError
from latam.storage.port import Store

# How often the API and the worker re-check their dependencies (and their gauges) on their
# own, so ``latam_dependency_up`` is current whether or not anybody calls /readyz.
REFRESH_SECONDS = 5.0


def check_dependencies(store: Store, broker: Broker) -> dict[str, str | None]:
    """Per dependency, None when it answers, else what is wrong (and what to do about
    it, where latam knows); each outcome is also recorded in ``latam_dependency_up``."""
    problems: dict[str, str | None] = {}
    for name, check in (("store", store.ping), ("broker", broker.ping)):
        try:
            check()
            problems[name] = None
        except LatamError as exc:
            problems[name] = exc.detail
        metrics.DEPENDENCY_UP.labels(dependency=name).set(0 if problems[name] else 1)
    return problems
