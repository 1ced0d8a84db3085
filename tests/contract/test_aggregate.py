"""Aggregation contract: SQLite, PostgreSQL, MariaDB and the fake give the same rows for
the same query over one fixed data set (numbers vs strings, nulls, missing fields, nested
paths, unicode), and the percentiles match values computed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from latam.aggregates import AggregateQuery, in_order, parse_query
from latam.domain import NewMessage
from latam.errors import NotFound, QueryTooExpensive
from latam.filters import parse_filters
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from latam.storage.timeouts import statement_timeout
from tests.contract.conftest import AnyStore
from tests.databases import temporary_database


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (minute of 2026-01-01T10:00, data, attributes)
FLIGHTS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("10:00", {"origin": "SCL", "delay_min": 5, "route": {"from": "SCL"}}, {"src": "ops"}),
    ("10:01", {"origin": "SCL", "delay_min": 10}, {"src": "ops"}),
    ("10:02", {"origin": "SCL", "delay_min": "12"}, {"src": "web"}),  # a string, not a number
    ("10:03", {"origin": "São Paulo", "delay_min": 2.5}, {"src": "ops"}),
    ("10:04", {"origin": "LIM", "delay_min": None}, {}),
    ("10:05", {"delay_min": 7}, {}),  # no origin: the null group
    ("10:06", {"origin": 1, "delay_min": 1}, {}),
    ("10:07", {"origin": 1.0, "delay_min": 3}, {}),  # the same number as 1
    ("10:08", {"origin": True, "delay_min": 4}, {}),
    ("10:09", {"origin": "1", "delay_min": 6}, {}),  # a string: not the number 1
    ("11:00", {"origin": "SCL", "delay_min": 20, "route": {"from": "SCL", "to": "LIM"}}, {}),
    ("11:10", {"origin": "SCL", "delay_min": -3.5}, {}),
    ("11:20", {"origin": "SCL ", "delay_min": 100}, {}),  # not "SCL"
    ("11:30", {"origin": {"a": 1}, "delay_min": 0}, {}),  # an object groups as null
    ("11:59:59.999999", {"origin": "東京", "delay_min": 8}, {}),
]
NEXT_DAY = ("2026-01-02T09:30", {"origin": "SCL", "delay_min": 1}, {})
# Every numeric delay, sorted: 14 of them (the string "12" and the null are not numbers).
DELAYS = [-3.5, 0, 1, 1, 2.5, 3, 4, 5, 6, 7, 8, 10, 20, 100]


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the nearest ranks, as percentile_cont."""
    position = p * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


@pytest.fixture
def topic(store: AnyStore) -> int:
    return write_flights(store)


def write_flights(store: AnyStore) -> int:
    """The data set in a new topic, beside another topic; the topic's id."""
    topic_id = store.create_topic("flights").id
    rows = [(f"2026-01-01T{t}", data, attrs) for t, data, attrs in FLIGHTS] + [NEXT_DAY]
    batch = [
        (
            topic_id,
            NewMessage(
                topic="flights",
                message_id=str(n),
                data=orjson.dumps(data).decode(),
                attributes=attrs,
                published_at=at(when),
            ),
        )
        for n, (when, data, attrs) in enumerate(rows)
    ]
    store.write_messages(batch)
    store.create_topic("other")
    return topic_id


def run(store: AnyStore, topic_id: int, **params: str) -> list[dict[str, Any]]:
    """The rows of the query as the API shows them (JSON, in order)."""
    reserved = {"metrics", "bucket", "group_by", "since", "until"}
    filters = parse_filters(params.items(), reserved=reserved)
    window = {k: at(params[k]) for k in ("since", "until") if k in params}
    query = parse_query(
        metrics=params.get("metrics"),
        bucket=params.get("bucket"),
        group_by=params.get("group_by"),
        filters=filters,
        **window,
    )
    return shown(query, in_order(store.aggregate(topic_id, query, limit=1001)))


def shown(query: AggregateQuery, rows: Any) -> list[dict[str, Any]]:
    found = []
    for row in rows:
        item: dict[str, Any] = {"bucket": row.bucket and row.bucket.isoformat()[:16]}
        item["group"] = {f.name: v for f, v in zip(query.group_by, row.group, strict=True)}
        item |= {m.key: v for m, v in zip(query.metrics, row.values, strict=True)}
        found.append(orjson.loads(orjson.dumps(item)))  # as JSON: 1 and 1.0 differ there
    return found


ALL = "count,sum:data.delay_min,avg:data.delay_min,min:data.delay_min,max:data.delay_min"
PERCENTILES = "p50:data.delay_min,p95:data.delay_min,p99:data.delay_min"


def test_whole_range_in_one_row(store: AnyStore, topic: int) -> None:
    (row,) = run(store, topic, metrics=f"{ALL},{PERCENTILES}")
    assert row["bucket"] is None
    assert row["group"] == {}
    assert row["count"] == 16
    assert row["sum:data.delay_min"] == 164
    assert isinstance(row["sum:data.delay_min"], int)
    assert row["avg:data.delay_min"] == pytest.approx(164 / 14, rel=1e-15)
    assert (row["min:data.delay_min"], row["max:data.delay_min"]) == (-3.5, 100)
    assert row["p50:data.delay_min"] == 4.5
    # To the bit: every store interpolates in double precision as percentile_cont does.
    assert row["p95:data.delay_min"] == percentile(DELAYS, 0.95)
    assert row["p99:data.delay_min"] == percentile(DELAYS, 0.99)
    assert row["p95:data.delay_min"] == pytest.approx(48.0, abs=1e-9)
    assert row["p99:data.delay_min"] == pytest.approx(89.6, abs=1e-9)


def test_count_distinct_keeps_strings_and_numbers_apart(store: AnyStore, topic: int) -> None:
    metrics = "count_distinct:data.origin,count_distinct:data.delay_min,count_distinct:data.no"
    (row,) = run(store, topic, metrics=metrics)
    # SCL, "SCL ", São Paulo, LIM, 東京, "1", 1 (= 1.0), true; not null, missing or objects.
    assert row["count_distinct:data.origin"] == 8
    # 13 distinct numbers and the string "12"; not the null.
    assert row["count_distinct:data.delay_min"] == 14
    assert row["count_distinct:data.no"] == 0


def test_groups_per_hour_keep_their_json_type(store: AnyStore, topic: int) -> None:
    metrics = "count,avg:data.delay_min,max:data.delay_min,p50:data.delay_min"
    rows = run(store, topic, bucket="hour", group_by="data.origin", metrics=metrics)
    ten, eleven, next_day = "2026-01-01T10:00", "2026-01-01T11:00", "2026-01-02T09:00"
    assert [(r["bucket"], r["group"]["data.origin"]) for r in rows] == [
        (ten, 1),
        (ten, "1"),
        (ten, "LIM"),
        (ten, "SCL"),
        (ten, "São Paulo"),
        (ten, True),
        (ten, None),
        (eleven, "SCL"),
        (eleven, "SCL "),
        (eleven, "東京"),
        (eleven, None),
        (next_day, "SCL"),
    ]
    values = [tuple(r[k] for k in ("count", *metrics.split(",")[1:])) for r in rows]
    assert values == [
        (2, 2.0, 3, 2.0),
        (1, 6.0, 6, 6.0),
        (1, None, None, None),
        (3, 7.5, 10, 7.5),
        (1, 2.5, 2.5, 2.5),
        (1, 4.0, 4, 4.0),
        (1, 7.0, 7, 7.0),
        (2, 8.25, 20, 8.25),
        (1, 100.0, 100, 100.0),
        (1, 8.0, 8, 8.0),
        (1, 0.0, 0, 0.0),
        (1, 1.0, 1, 1.0),
    ]
    assert all(isinstance(r["avg:data.delay_min"], float | None) for r in rows)


def test_nested_paths_and_attributes(store: AnyStore, topic: int) -> None:
    rows = run(store, topic, group_by="data.route.from,attributes.src")
    assert [(list(r["group"].values()), r["count"]) for r in rows] == [
        (["SCL", "ops"], 1),
        (["SCL", None], 1),
        ([None, "ops"], 2),
        ([None, "web"], 1),
        ([None, None], 11),
    ]


def test_filters_and_window(store: AnyStore, topic: int) -> None:
    window = {"since": "2026-01-01T10:00:00", "until": "2026-01-01T11:00:00"}
    rows = run(store, topic, **window, **{"data.delay_min": "gte.5"}, metrics="count")
    assert rows == [{"bucket": None, "group": {}, "count": 4}]  # 5, 10, 7 and 6
    rows = run(
        store,
        topic,
        since="2026-01-01T11:00:00",
        until="2026-01-02T00:00:00",
        bucket="day",
        group_by="data.origin",
        metrics="count,sum:data.delay_min",
        **{"data.origin": "in.(SCL,東京)", "data.delay_min": "lt.50"},
    )
    day = "2026-01-01T00:00"
    assert rows == [
        {"bucket": day, "group": {"data.origin": o}, "count": n, "sum:data.delay_min": s}
        for o, n, s in (("SCL", 2, 16.5), ("東京", 1, 8))
    ]


def test_since_is_inclusive_and_until_exclusive(store: AnyStore, topic: int) -> None:
    window = {"since": "2026-01-01T10:05:00", "until": "2026-01-01T11:59:59.999999"}
    assert run(store, topic, **window)[0]["count"] == 9


def test_an_empty_window(store: AnyStore, topic: int) -> None:
    window = {"since": "2025-01-01T00:00:00", "until": "2025-01-02T00:00:00"}
    metrics = "count,avg:data.delay_min,p95:data.delay_min,count_distinct:data.origin"
    assert run(store, topic, **window, metrics=metrics) == [
        {
            "bucket": None,
            "group": {},
            "count": 0,
            "avg:data.delay_min": None,
            "p95:data.delay_min": None,
            "count_distinct:data.origin": 0,
        }
    ]
    assert run(store, topic, **window, bucket="hour") == []
    assert run(store, topic, **window, group_by="data.origin") == []


def test_the_limit_cuts_the_rows(store: AnyStore, topic: int) -> None:
    query = parse_query(bucket="minute")
    assert len(store.aggregate(topic, query, limit=3)) == 3


def test_a_missing_topic_is_not_found(store: AnyStore, topic: int) -> None:
    with pytest.raises(NotFound):
        store.aggregate(topic + 100, parse_query(), limit=10)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[SqlStore]:
    with temporary_database("postgresql", tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        store = SqlStore(engine)
        yield store
        store.close()


@pytest.mark.parametrize("group_by", ["", "data.origin", "data.origin,attributes.src"])
def test_window_percentiles_equal_percentile_cont(postgres: SqlStore, group_by: str) -> None:
    """On PostgreSQL, the window-function percentiles the other stores use give exactly
    what percentile_cont gives."""
    topic_id = write_flights(postgres)
    query = parse_query(
        metrics=f"count,{PERCENTILES},p50:data.origin", bucket="hour", group_by=group_by
    )
    native = in_order(postgres.aggregate(topic_id, query, limit=1001))
    windows = in_order(postgres.aggregate(topic_id, query, limit=1001, native=False))
    assert native == windows
    assert len(native) >= 3


def test_numbers_at_the_edges_of_the_double_range(store: AnyStore) -> None:
    """A number below the double range (kept exactly by PostgreSQL's numeric) reads as
    0, and two numbers too far apart to subtract give a null percentile: not a store
    error (PostgreSQL refused the cast, MariaDB the subtraction)."""
    topic_id = store.create_topic("edges").id
    texts = [
        '{"tiny":1.0000000000000000000001E-400,"wide":-1.7e308}',
        '{"tiny":2,"wide":1.5e308}',
    ]
    store.write_messages(
        [(topic_id, NewMessage("edges", f"e{n}", text)) for n, text in enumerate(texts)]
    )
    rows = run(store, topic_id, metrics="p50:data.tiny,min:data.tiny,p50:data.wide,min:data.wide")
    assert rows == [
        {
            "bucket": None,
            "group": {},
            "p50:data.tiny": 1.0,
            "min:data.tiny": 0,
            "p50:data.wide": None,
            "min:data.wide": -1.7e308,
        }
    ]


def test_a_statement_stopped_in_a_transaction_is_too_expensive(postgres: SqlStore) -> None:
    """On a connection inside a transaction, the timeout's reset ran in the aborted
    transaction and hid QueryTooExpensive behind InFailedSqlTransaction."""
    with postgres.engine.connect() as conn:
        with pytest.raises(QueryTooExpensive), statement_timeout(conn, 0.05):
            conn.execute(text("SELECT pg_sleep(2)"))
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
