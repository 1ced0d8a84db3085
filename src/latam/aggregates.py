"""Aggregations of a topic's messages (``GET /v1/topics/{id}/aggregate``): the request
parsed and checked, and the shape of its answer.

An aggregation counts messages and computes metrics of ``data`` fields per time bucket
(``minute``, ``hour``, ``day``, or one bucket over the whole window) and per group (the
values of up to three fields). Each store computes it in one statement
(``storage.aggregate``); this module holds the rules every store follows:

- a group value keeps its JSON type (string, number, boolean); a missing field, a JSON
  null, an object or an array groups as null; numbers group by value (``1`` and ``1.0``
  are one group);
- ``sum``, ``avg``, ``min``, ``max`` and the percentiles consider JSON numbers only (a
  string ``"7"`` is not a number); a group without numbers gets null;
- percentiles interpolate linearly between the two nearest values, as PostgreSQL's
  ``percentile_cont`` does;
- ``count_distinct`` counts distinct JSON scalars: a string and a number are never the
  same value (``"1"`` and ``1`` count twice), numbers compare by value, strings by code
  point; nulls, objects and arrays are not counted;
- rows come in bucket order, then group order: per field numbers, then strings, then
  ``false``/``true``, then null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from latam.domain import BUCKET_SECONDS, EPOCH
from latam.errors import InvalidQuery
from latam.filters import NO_FILTERS, FieldPath, Filters, parse_path

MAX_ROWS = 1_000  # groups x buckets in one answer
MAX_METRICS = 10
MAX_GROUP_BY = 3
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
NUMERIC = ("sum", "avg", "min", "max", *PERCENTILES)
METRICS = ("count", *NUMERIC, "count_distinct")
# The endpoint's own query parameters; every other one is a field filter.
PARAMS = ("bucket", "group_by", "metrics", "since", "until")

GroupValue = str | int | float | bool | None
MetricValue = int | float | None


@dataclass(frozen=True, slots=True)
class Metric:
    """``count``, or ``name`` of a ``field`` (``avg:data.delay_min``)."""

    name: str
    field: FieldPath | None = None

    @property
    def key(self) -> str:
        """The metric's name in the answer, as the client wrote it."""
        return self.name if self.field is None else f"{self.name}:{self.field.name}"


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """What to aggregate: ``since`` inclusive, ``until`` exclusive, as on reads."""

    metrics: tuple[Metric, ...] = (Metric("count"),)
    bucket: str | None = None
    group_by: tuple[FieldPath, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    filters: Filters = NO_FILTERS


@dataclass(frozen=True, slots=True)
class AggregateRow:
    """One bucket of one group: ``values`` in the order of the query's metrics."""

    bucket: datetime | None
    group: tuple[GroupValue, ...]
    values: tuple[MetricValue, ...]


def parse_query(
    *,
    metrics: str | None = None,
    bucket: str | None = None,
    group_by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: Filters = NO_FILTERS,
) -> AggregateQuery:
    """The query of the endpoint's parameters; InvalidQuery (400) naming the bad one."""
    if bucket is not None and bucket not in BUCKET_SECONDS:
        raise InvalidQuery(
            f"bucket must be one of {', '.join(BUCKET_SECONDS)} (or left out: one bucket"
            " over the whole window)",
            field="bucket",
        )
    if since is not None and until is not None and since > until:
        raise InvalidQuery("since must not be after until", field="since")
    query = AggregateQuery(
        metrics=parse_metrics(metrics or "count"),
        bucket=bucket,
        group_by=parse_group_by(group_by or ""),
        since=since,
        until=until,
        filters=filters,
    )
    check_buckets(query)
    return query


def parse_metrics(text: str) -> tuple[Metric, ...]:
    """``count,avg:data.x,p95:data.x``: 1 to MAX_METRICS metrics, none twice."""
    found: list[Metric] = []
    for item in text.split(","):
        metric = _metric(item.strip())
        if metric in found:
            raise InvalidQuery(f"{metric.key} is asked for twice", field="metrics")
        found.append(metric)
    if len(found) > MAX_METRICS:
        raise InvalidQuery(f"at most {MAX_METRICS} metrics per request", field="metrics")
    return tuple(found)


def _metric(item: str) -> Metric:
    name, colon, path = item.partition(":")
    if name not in METRICS:
        raise InvalidQuery(
            f"{name[:40]!r} is not a metric: use {', '.join(METRICS)}"
            " (all but count followed by :<field>, as in avg:data.delay_min)",
            field="metrics",
        )
    if name == "count":
        if colon:
            raise InvalidQuery(
                "count counts messages and takes no field (count_distinct:<field> counts"
                " the distinct values of one)",
                field="metrics",
            )
        return Metric("count")
    if not path:
        raise InvalidQuery(f"{name} needs a field: {name}:data.<key>", field="metrics")
    field = parse_path(path, param="metrics")
    if name in NUMERIC and field.root == "attributes":
        raise InvalidQuery(
            f"{name} computes over numbers, and attribute values are strings: use a data"
            " field (count_distinct works on attributes)",
            field="metrics",
        )
    return Metric(name, field)


def parse_group_by(text: str) -> tuple[FieldPath, ...]:
    """``data.origin,attributes.src``: up to MAX_GROUP_BY fields, none twice."""
    if not text:
        return ()
    fields = tuple(parse_path(item.strip(), param="group_by") for item in text.split(","))
    if len(fields) > MAX_GROUP_BY:
        raise InvalidQuery(
            f"group_by takes at most {MAX_GROUP_BY} fields, not {len(fields)}", field="group_by"
        )
    if len(set(fields)) != len(fields):
        raise InvalidQuery("group_by names a field twice", field="group_by")
    return fields


def check_buckets(query: AggregateQuery) -> None:
    """Refuse, before any query, a window with more than MAX_ROWS buckets."""
    if query.bucket is None or query.since is None or query.until is None:
        return
    width = timedelta(seconds=BUCKET_SECONDS[query.bucket])
    first = (query.since - EPOCH) // width
    last = (query.until - EPOCH - timedelta(microseconds=1)) // width  # until is exclusive
    if last - first + 1 > MAX_ROWS:
        raise too_many_rows(query)


def too_many_rows(query: AggregateQuery) -> InvalidQuery:
    """The answer would hold more than MAX_ROWS rows."""
    return InvalidQuery(
        f"the aggregation has more than {MAX_ROWS} rows (groups x buckets): narrow"
        " since/until, use a wider bucket, or group by fewer fields",
        field="group_by" if query.group_by else "bucket",
    )


def number(value: object) -> int | float | None:
    """A number as JSON shows it, the same from every store: in double precision (as
    MySQL computes), integral values up to 2**53 as integers (SQLite, MySQL and PostgreSQL
    return 7, 7.0 or Decimal('7.0')), and null past the double range (an overflowing sum)."""
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, int | float | Decimal):
        raise TypeError(f"not a number: {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float):
        return None
    if as_float.is_integer() and abs(as_float) < 2**53:
        return int(as_float)
    return as_float


def metric_value(metric: Metric, value: Any) -> MetricValue:
    """A metric's value as the answer holds it: counts as integers, averages and
    percentiles as floats, sums, minima and maxima as numbers."""
    if metric.name in {"count", "count_distinct"}:
        return int(value or 0)
    if value is None:
        return None
    if metric.name == "avg" or metric.name in PERCENTILES:
        as_float = float(value)
        return as_float if math.isfinite(as_float) else None
    return number(value)


def _group_order(value: GroupValue) -> tuple[int, str | float]:
    if value is None:
        return (3, 0.0)
    if isinstance(value, bool):
        return (2, float(value))
    if isinstance(value, str):
        return (1, value)
    return (0, float(value))


def in_order(rows: Sequence[AggregateRow]) -> list[AggregateRow]:
    """Rows by bucket, then by group (the order the module docstring gives)."""
    return sorted(
        rows,
        key=lambda row: (row.bucket or EPOCH, tuple(_group_order(v) for v in row.group)),
    )
