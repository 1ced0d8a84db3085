"""Aggregations (``latam.aggregates``) as one SQL statement on SQLite, PostgreSQL and
MySQL/MariaDB: the database scans the window and returns at most ``limit`` rows.

The statement has up to three levels. ``base`` reads each message of the window once:
its bucket, each group field as three typed columns (string, number, boolean: one holds
the value, or none for null), and each metric field as a number, all through
``filter_sql``'s typed expressions, so every store sees the same values. ``ranked``, only
where percentiles need it, numbers each metric field's values within its bucket and group
(``ROW_NUMBER``/``COUNT`` windows). The outer level groups and aggregates.

Percentiles are PostgreSQL's ``percentile_cont``; SQLite and MySQL/MariaDB have no such
aggregate, so they pick the two ranked rows around ``p * (n - 1)`` and interpolate with
the same arithmetic (``lo + (hi - lo) * fraction`` in double precision), which gives the
same answer (tests/contract/test_aggregate.py compares both on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, literal_column, select, text

from latam.aggregates import (
    PERCENTILES,
    AggregateQuery,
    AggregateRow,
    GroupValue,
    Metric,
    metric_value,
    number,
)
from latam.errors import InvalidQuery
from latam.filters import FieldPath
from latam.storage.dialects import MYSQL_NAMES, TIME_INDEX, bucket_start, through
from latam.storage.filter_sql import conditions, is_expr, value_expr
from latam.storage.schema import messages


def aggregate_rows(
    conn: Connection, topic_id: int, query: AggregateQuery, *, limit: int, native: bool = True
) -> list[AggregateRow]:
    """Up to ``limit`` rows of the aggregation, unordered; ``native=False`` computes
    percentiles with window functions on PostgreSQL too (to compare the two)."""
    dialect = conn.dialect.name
    windows = any(m.name in PERCENTILES for m in query.metrics) and not (
        native and dialect == "postgresql"
    )
    if windows:
        _check_windows(conn, query)
    sql = Statement(query, dialect, windows).build(topic_id, limit)
    rows = conn.execute(sql).all()
    return [_row(query, row) for row in rows]


class Statement:
    """The SELECT of one aggregation in one dialect."""

    def __init__(self, query: AggregateQuery, dialect: str, windows: bool) -> None:
        self.query, self.dialect, self.windows = query, dialect, windows
        # Each metric field once, however many metrics use it.
        self.fields = list(dict.fromkeys(m.field for m in query.metrics if m.field is not None))
        self.keys = ["b"] if query.bucket else []
        self.keys += [f"g{i}{kind}" for i in range(len(query.group_by)) for kind in "snb"]

    def build(self, topic_id: int, limit: int) -> Select[Any]:
        source = self._base(topic_id).subquery("base")
        if self.windows:
            source = self._ranked(source).subquery("ranked")
        keys: list[ColumnElement[Any]] = [literal_column(key) for key in self.keys]
        outer = select(*keys, *self._metrics()).select_from(source)
        return outer.group_by(*keys).limit(limit) if keys else outer.limit(limit)

    def _base(self, topic_id: int) -> Select[Any]:
        columns: list[ColumnElement[Any]] = []
        if self.query.bucket:
            start = bucket_start(messages.c.published_at, self.query.bucket, self.dialect)
            columns.append(start.label("b"))
        for i, path in enumerate(self.query.group_by):
            for kind, sql in zip("snb", self._typed(path), strict=True):
                columns.append(literal_column(sql).label(f"g{i}{kind}"))
        for j, path in enumerate(self.fields):
            columns.append(literal_column(value_expr(path, "number", self.dialect)).label(f"x{j}"))
            if any(m.name == "count_distinct" and m.field == path for m in self.query.metrics):
                for kind, sql in zip("snb", self._typed(path), strict=True):
                    columns.append(literal_column(sql).label(f"d{j}{kind}"))
        if not columns:  # count alone: a row per message is all the outer level needs
            columns.append(literal_column("1").label("one"))
        base = select(*columns).select_from(messages).where(messages.c.topic_id == topic_id)
        if self.query.since is not None:
            base = base.where(messages.c.published_at >= self.query.since)
        if self.query.until is not None:
            base = base.where(messages.c.published_at < self.query.until)
        for sql, values in conditions(self.query.filters, self.dialect):
            base = base.where(text(sql).bindparams(**values))
        windowed = self.query.since is not None or self.query.until is not None
        return through(base, TIME_INDEX) if windowed else base

    def _typed(self, path: FieldPath) -> tuple[str, str, str]:
        """The field as a string, a number and a boolean (1/0) column."""
        string = value_expr(path, "string", self.dialect)
        if self.dialect in MYSQL_NAMES:
            # utf8mb4_bin pads with spaces: 'a' and 'a ' would be one group, one value.
            string = f"CAST({string} AS BINARY)"
        truth, falsity = is_expr(path, True, self.dialect), is_expr(path, False, self.dialect)
        boolean = f"CASE WHEN {truth} THEN 1 WHEN {falsity} THEN 0 END"
        return string, value_expr(path, "number", self.dialect), boolean

    def _ranked(self, base: Any) -> Select[Any]:
        """``base`` with each percentile field's rank ``r<j>`` and count ``c<j>``."""
        partition = f"PARTITION BY {', '.join(self.keys)}" if self.keys else ""
        columns: list[Any] = [base]
        for j, path in enumerate(self.fields):
            if not any(m.name in PERCENTILES and m.field == path for m in self.query.metrics):
                continue
            # Numbers first, nulls (other types, missing) after them: ranks 1..c are numbers.
            order = f"ORDER BY CASE WHEN x{j} IS NULL THEN 1 ELSE 0 END, x{j}"
            columns.append(
                literal_column(f"ROW_NUMBER() OVER ({partition} {order})").label(f"r{j}")
            )
            columns.append(literal_column(f"COUNT(x{j}) OVER ({partition})").label(f"c{j}"))
        return select(*columns)

    def _metrics(self) -> list[ColumnElement[Any]]:
        return [
            literal_column(self._metric(metric)).label(f"m{n}")
            for n, metric in enumerate(self.query.metrics)
        ]

    def _metric(self, metric: Metric) -> str:
        if metric.field is None:
            return "COUNT(*)"
        j = self.fields.index(metric.field)
        x = f"x{j}"
        if metric.name == "count_distinct":
            return " + ".join(f"COUNT(DISTINCT d{j}{kind})" for kind in "snb")
        if metric.name in PERCENTILES:
            return self._percentile(PERCENTILES[metric.name], j)
        if metric.name == "sum" and self.dialect == "sqlite":
            # TOTAL sums in double precision, as MySQL does, where SUM stops at 2**63.
            return f"CASE WHEN COUNT({x}) > 0 THEN TOTAL({x}) END"
        return f"{metric.name.upper()}({x})"

    def _percentile(self, p: float, j: int) -> str:
        if not self.windows:
            return f"percentile_cont({p!r}) WITHIN GROUP (ORDER BY {_pg_double(f'x{j}')})"
        # As percentile_cont: position p * (n - 1) from 0, in double precision (an
        # exponent makes the literal a double on MySQL; on PostgreSQL it stays numeric),
        # floor and ceiling rows.
        fraction = (
            f"CAST({p!r} AS double precision)" if self.dialect == "postgresql" else f"{p!r}e0"
        )
        position = f"({fraction} * (c{j} - 1))"
        floor = f"CAST({position} AS INTEGER)" if self.dialect == "sqlite" else f"FLOOR({position})"
        ceiling = f"CASE WHEN {position} > {floor} THEN {floor} + 1 ELSE {floor} END"
        # PostgreSQL (compared with percentile_cont) in double precision too, not numeric.
        x = _pg_double(f"x{j}") if self.dialect == "postgresql" else f"x{j}"
        low = f"MAX(CASE WHEN r{j} = {floor} + 1 THEN {x} END)"
        high = f"MAX(CASE WHEN r{j} = {ceiling} + 1 THEN {x} END)"
        # high - low past the double range is infinite to percentile_cont (null in the
        # answer) but an error to MySQL/MariaDB and PostgreSQL arithmetic: null it first.
        spread = f"ABS({high} / 2 - {low} / 2) > {HALF_DOUBLE_MAX!r}"
        return (
            f"CASE WHEN {spread} THEN NULL"
            f" ELSE {low} + ({high} - {low}) * MAX({position} - {floor}) END"
        )


# Half the largest double: two numbers this far apart have no finite difference.
HALF_DOUBLE_MAX = 8.988465674311579e307


def _pg_double(x: str) -> str:
    """PostgreSQL's numeric ``x`` as a double; numbers below the double range (JSON may
    hold ``1.000000000000000000001e-400``) are 0, as the other stores read them, where
    the cast would fail."""
    return f"CAST(CASE WHEN ABS({x}) < 1e-320 THEN 0 ELSE {x} END AS double precision)"


def _check_windows(conn: Connection, query: AggregateQuery) -> None:
    """400 naming the metric where the store lacks the window functions percentiles need."""
    dialect = conn.dialect.name
    version = conn.dialect.server_version_info or ()
    if dialect == "sqlite":
        missing = sqlite3.sqlite_version_info < (3, 25)
        store = f"SQLite {sqlite3.sqlite_version}"
    else:
        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
        missing = tuple(version) < ((10, 2) if mariadb else (8, 0))
        store = f"{'MariaDB' if mariadb else 'MySQL'} {'.'.join(map(str, version))}"
    if missing:
        metric = next(m.key for m in query.metrics if m.name in PERCENTILES)
        raise InvalidQuery(
            f"{metric} needs window functions (ROW_NUMBER), which {store} lacks", field="metrics"
        )


def _group_value(string: Any, numeric: Any, boolean: Any) -> GroupValue:
    if string is not None:
        return string.decode() if isinstance(string, bytes | bytearray) else str(string)
    if numeric is not None:
        return number(numeric)
    return None if boolean is None else bool(boolean)


def _row(query: AggregateQuery, row: Any) -> AggregateRow:
    values = list(row)
    start = values.pop(0) if query.bucket else None
    group = tuple(_group_value(*values[3 * i : 3 * i + 3]) for i in range(len(query.group_by)))
    metrics = values[3 * len(query.group_by) :]
    return AggregateRow(
        bucket=None if start is None else datetime.fromtimestamp(int(start), tz=UTC),
        group=group,
        values=tuple(metric_value(m, v) for m, v in zip(query.metrics, metrics, strict=True)),
    )
