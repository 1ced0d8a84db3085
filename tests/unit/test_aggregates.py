"""Aggregation requests: parsing, the errors that name the parameter, the answer's
numbers and order, and the query budget's debt."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from latam.aggregates import (
    MAX_ROWS,
    AggregateRow,
    Metric,
    in_order,
    metric_value,
    number,
    parse_query,
)
from latam.api.ratelimit import RateLimiter
from latam.errors import InvalidQuery
from latam.filters import FieldPath


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_defaults_count_over_the_whole_window() -> None:
    query = parse_query()
    assert query.metrics == (Metric("count"),)
    assert (query.bucket, query.group_by, query.since, query.until) == (None, (), None, None)


def test_metrics_and_group_by_are_parsed_in_order() -> None:
    query = parse_query(
        metrics="count, avg:data.delay_min,p95:data.delay_min,count_distinct:attributes.src",
        bucket="hour",
        group_by="data.origin,attributes.src,data.route.from",
    )
    assert [m.key for m in query.metrics] == [
        "count",
        "avg:data.delay_min",
        "p95:data.delay_min",
        "count_distinct:attributes.src",
    ]
    assert query.group_by == (
        FieldPath("data", ("origin",)),
        FieldPath("attributes", ("src",)),
        FieldPath("data", ("route", "from")),
    )


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"metrics": "median:data.x"}, "metrics", "not a metric"),
        ({"metrics": "avg"}, "metrics", "needs a field"),
        ({"metrics": "avg:"}, "metrics", "needs a field"),
        ({"metrics": "count:data.x"}, "metrics", "takes no field"),
        ({"metrics": "sum:attributes.n"}, "metrics", "attribute values are strings"),
        ({"metrics": "avg:data..x"}, "metrics", "not a valid path"),
        ({"metrics": "avg:body.x"}, "metrics", "not a field"),
        ({"metrics": "count,count"}, "metrics", "twice"),
        ({"metrics": "avg:data.x,avg:data.x"}, "metrics", "twice"),
        ({"metrics": ",".join(f"max:data.f{n}" for n in range(11))}, "metrics", "at most 10"),
        ({"metrics": ""}, None, None),
        ({"group_by": "data.a,data.b,data.c,data.d"}, "group_by", "at most 3"),
        ({"group_by": "data.a,data.a"}, "group_by", "twice"),
        ({"group_by": "data.a,"}, "group_by", "not a field"),
        ({"group_by": "data.a b"}, "group_by", "not a valid path"),
        ({"group_by": "attributes.a.b"}, "group_by", "flat"),
        ({"bucket": "week"}, "bucket", "minute, hour, day"),
    ],
)
def test_bad_input_names_the_parameter(
    params: dict[str, str], field: str | None, words: str | None
) -> None:
    if field is None:
        assert parse_query(**params).metrics == (Metric("count"),)
        return
    with pytest.raises(InvalidQuery) as caught:
        parse_query(**params)
    assert caught.value.field == field
    assert words is not None
    assert words in caught.value.detail


def test_since_after_until_is_refused() -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse_query(since=at("2026-01-02T00:00"), until=at("2026-01-01T00:00"))
    assert caught.value.field == "since"
    assert parse_query(since=at("2026-01-01T00:00"), until=at("2026-01-01T00:00"))


@pytest.mark.parametrize(
    ("bucket", "since", "until", "fits"),
    [
        ("minute", "2026-01-01T00:00", "2026-02-01T00:00", False),  # 44,640 minutes
        ("minute", "2026-01-01T00:00", "2026-01-01T16:40", True),  # exactly 1,000
        ("minute", "2026-01-01T00:00:30", "2026-01-01T16:40:30", False),  # touches 1,001
        ("hour", "2026-01-01T00:00", "2026-02-01T00:00", True),  # 744 hours
        ("hour", "2026-01-01T00:00", "2026-03-15T00:00", False),
        ("day", "2000-01-01T00:00", "2026-01-01T00:00", False),
    ],
)
def test_too_many_buckets_are_refused_before_any_query(
    bucket: str, since: str, until: str, fits: bool
) -> None:
    window = {"since": at(since), "until": at(until)}
    if fits:
        parse_query(bucket=bucket, **window)
        return
    with pytest.raises(InvalidQuery) as caught:
        parse_query(bucket=bucket, **window)
    assert caught.value.field == "bucket"
    assert f"more than {MAX_ROWS} rows" in caught.value.detail


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (7, 7),
        (7.0, 7),
        (Decimal("7.000"), 7),
        (Decimal("7.5"), 7.5),
        (-3.5, -3.5),
        (2.0**60, 2.0**60),  # past 2**53 a float stays a float
        (2**53 + 1, 2.0**53),  # and an integer is a double, as MySQL computes it
        (Decimal("9007199254740993"), 2.0**53),
        (float("inf"), None),  # a sum past the double range
        (None, None),
    ],
)
def test_numbers_look_the_same_from_every_store(value: object, shown: object) -> None:
    assert number(value) == shown
    assert type(number(value)) is type(shown)


def test_metric_values_have_their_types() -> None:
    assert metric_value(Metric("count"), Decimal(3)) == 3
    assert metric_value(Metric("count_distinct", FieldPath("data", ("x",))), None) == 0
    avg = metric_value(Metric("avg", FieldPath("data", ("x",))), Decimal("7"))
    assert avg == 7.0
    assert isinstance(avg, float)
    p95 = metric_value(Metric("p95", FieldPath("data", ("x",))), 48)
    assert isinstance(p95, float)
    assert metric_value(Metric("max", FieldPath("data", ("x",))), 10.0) == 10
    assert metric_value(Metric("min", FieldPath("data", ("x",))), None) is None


def test_rows_come_by_bucket_then_numbers_strings_booleans_null() -> None:
    early, late = at("2026-01-01T10:00"), at("2026-01-01T11:00")
    groups = [None, True, False, "b", "a", "Z", 10, 2, -1.5]
    rows = [AggregateRow(late, (g,), ()) for g in groups]
    rows += [AggregateRow(early, (g,), ()) for g in groups]
    ordered = in_order(rows)
    expected = [-1.5, 2, 10, "Z", "a", "b", False, True, None]
    assert [r.group[0] for r in ordered] == expected * 2
    assert [r.bucket for r in ordered] == [early] * 9 + [late] * 9


def test_a_charge_runs_into_debt_and_delays_the_next_acquire() -> None:
    budget = RateLimiter(rate=1.0, burst=5)
    assert budget.acquire("k", 1.0) == 0.0
    budget.charge("k", 9.0)  # a query ran 10 s with 5 s of budget: 5 s of debt
    wait = budget.acquire("k", 1.0)
    assert 5.9 < wait <= 6.0
    budget.charge("k", 1_000.0)
    assert budget.acquire("k", 1.0) <= 11.0, "debt stops at -burst"
    assert budget.acquire("other", 1.0) == 0.0
    off = RateLimiter(rate=0.0, burst=1)
    off.charge("k", 100.0)
    assert off.acquire("k", 1.0) == 0.0
