"""Service level objectives on the status page: the catalog, and each SLO's state.

The catalog (``slo_catalog.json`` in the package, generated from deploy/slo/slos.yaml)
gives each SLO's objective and a PromQL query with ``$window`` for its share of bad
events. Evaluated over the SLO period and over the last hour, they give:

- ``sli`` = 1 - bad(period);
- ``error_budget_remaining`` = 1 - bad(period) / (1 - objective), negative once overspent;
- ``burn_rate_1h`` = bad(1h) / (1 - objective): 1 spends the budget exactly in a period;
- ``state``: ``unknown`` (no source, a failed query, or no traffic in the period),
  ``exhausted`` (no budget left), ``burning`` (burn rate above ``PAGE_BURN_RATE``, the
  threshold that pages), else ``ok``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import Any

import orjson

from latam.promql import QueryFailed

PAGE_BURN_RATE = 14.4  # the fastest alert tier: 2 % of the period's budget in one hour
SHORT_WINDOW = "1h"
NO_SOURCE = "no metrics source configured"


@dataclass(frozen=True, slots=True)
class Slo:
    name: str
    title: str
    objective: float
    description: str
    bad_ratio_query: str  # PromQL with ``$window``: the share of bad events

    def query(self, window: str) -> str:
        return self.bad_ratio_query.replace("$window", window)


@dataclass(frozen=True, slots=True)
class Catalog:
    period_days: int
    slos: tuple[Slo, ...]

    @property
    def period_window(self) -> str:
        return f"{self.period_days}d"


def load_catalog(text: bytes | None = None) -> Catalog:
    """The SLO catalog shipped in the package (or ``text``). Unknown keys are ignored;
    a missing or mistyped one is a ``ValueError``."""
    raw = orjson.loads(
        files("latam").joinpath("slo_catalog.json").read_bytes() if text is None else text
    )
    try:
        period = raw["period_days"]
        slos = tuple(
            Slo(
                name=str(s["name"]),
                title=str(s["title"]),
                objective=float(s["objective"]),
                description=str(s["description"]),
                bad_ratio_query=str(s["bad_ratio_query"]),
            )
            for s in raw["slos"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the SLO catalog is malformed ({type(exc).__name__}: {exc})") from exc
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ValueError("the SLO catalog's period_days must be a positive integer")
    if not all(0 < slo.objective < 1 and "$window" in slo.bad_ratio_query for slo in slos):
        raise ValueError("every SLO needs an objective in (0, 1) and a query with $window")
    return Catalog(period, slos)


@dataclass(frozen=True, slots=True)
class SloStatus:
    slo: Slo
    state: str  # ok, burning, exhausted or unknown
    reason: str | None = None  # why unknown
    sli: float | None = None  # good share over the period
    error_budget_remaining: float | None = None  # fraction of the budget; negative: overspent
    burn_rate_1h: float | None = None  # None: no traffic in the last hour

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.slo.name,
            "title": self.slo.title,
            "description": self.slo.description,
            "objective": self.slo.objective,
            "state": self.state,
            "reason": self.reason,
            "sli": _round(self.sli, 6),
            "error_budget_remaining": _round(self.error_budget_remaining, 4),
            "burn_rate_1h": _round(self.burn_rate_1h, 3),
        }


# A query's values, why it has none, or None where no metrics source is configured.
Answer = list[float] | QueryFailed | None


def judge(slo: Slo, period: Answer, hour: Answer, *, period_days: int) -> SloStatus:
    """An SLO's state from its bad-ratio answers over the period and the last hour."""
    if period is None or hour is None:
        return SloStatus(slo, "unknown", NO_SOURCE)
    if isinstance(period, QueryFailed):
        return SloStatus(slo, "unknown", period.reason)
    bad = bad_ratio(period)
    if bad is None:
        return SloStatus(slo, "unknown", f"no traffic in the last {period_days} days")
    # Rounded: 1 - 0.999 is 0.0010000000000000009, which would leave a spent budget a hair.
    budget = round(1 - slo.objective, 12)
    recent = None if isinstance(hour, QueryFailed) else bad_ratio(hour)
    found = SloStatus(
        slo,
        "ok",
        sli=1 - bad,
        error_budget_remaining=1 - bad / budget,
        burn_rate_1h=None if recent is None else recent / budget,
    )
    if 1 - bad / budget <= 0:
        return replace(found, state="exhausted")
    if isinstance(hour, QueryFailed):
        return replace(found, state="unknown", reason=hour.reason)
    if recent is not None and recent / budget > PAGE_BURN_RATE:
        return replace(found, state="burning")
    return found


def bad_ratio(values: Sequence[float]) -> float | None:
    """The worst of a query's values as a share in [0, 1]; None when there is none (no
    series, or NaN: no eligible events)."""
    known = [value for value in values if not math.isnan(value)]
    return min(max(max(known), 0.0), 1.0) if known else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
