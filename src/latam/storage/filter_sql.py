"""Field filters (``latam.filters``) as SQL on SQLite, PostgreSQL and MySQL/MariaDB.

Every store stores ``data`` and ``attributes`` as JSON text, and reads a field with its
own JSON functions: SQLite ``json_extract``/``json_type``, PostgreSQL the ``json``
operators (``json``, not ``jsonb``: it parses only up to the key it looks for, and it
accepts every text the API accepted, ``\\u0000`` included), MySQL/MariaDB
``JSON_EXTRACT``/``JSON_TYPE``. Each comparison is guarded by the JSON type of the value,
so a number matches only numbers and a string only strings, and strings compare by code
point (PostgreSQL ``COLLATE "C"``, MySQL ``utf8mb4_bin``, SQLite binary): the same rows
match on every store (tests/contract/test_filters.py).

Paths are written into the statement as literals, which ``filters.KEY`` makes safe, so
that an index on the same expression (``latam index create``, ``storage.field_index``)
matches it; every value is a bound parameter.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any, Literal

from latam.filters import SQL_OPERATORS, FieldPath, Filter, Filters, Scalar
from latam.storage.dialects import MYSQL_NAMES

Kind = Literal["string", "number"]
MYSQL_NUMBERS = "('INTEGER','DOUBLE','DECIMAL','UNSIGNED INTEGER')"


def _column(field: FieldPath, table: str) -> str:
    return f"{table}{field.root}"


def _json_path(field: FieldPath) -> str:
    """The SQLite/MySQL path literal: ``'$."a"."b"'`` (keys never hold quotes)."""
    return "'$" + "".join(f'."{key}"' for key in field.keys) + "'"


# PostgreSQL cannot turn a JSON ``\u0000`` into text, and its json operators fail on a
# document holding one anywhere (even in a field no filter reads): such documents are
# read with each escaped NUL (an odd run of backslashes before ``u0000``) as ``\u0001``.
PG_NUL = r"(?<!\\)((\\\\)*)\\u0000"


def _pg_json(column: str) -> str:
    """``column`` as json, readable by the json operators whatever it holds."""
    cleaned = f"regexp_replace({column}, '{PG_NUL}', '\\1\\\\u0001', 'g')"
    return (
        f"CAST(CASE WHEN strpos({column}, '\\u0000') > 0 THEN {cleaned} ELSE {column} END AS json)"
    )


def _pg_path(field: FieldPath, table: str, *, text: bool) -> str:
    """``CAST(data AS json) -> 'a' ->> 'b'``: the value as json, or as text."""
    parts = [_pg_json(_column(field, table))]
    for n, key in enumerate(field.keys):
        last = n == len(field.keys) - 1
        parts.append(f"{'->>' if last and text else '->'} '{key}'")
    return " ".join(parts)


def value_expr(field: FieldPath, kind: Kind, dialect: str, table: str = "") -> str:
    """The field as a SQL string or number, NULL where it holds another JSON type (or is
    missing): the expression filters compare and field indexes are built on."""
    if dialect == "postgresql":
        json_value, text = _pg_path(field, table, text=False), _pg_path(field, table, text=True)
        if kind == "string":
            return f"(CASE WHEN json_typeof({json_value}) = 'string' THEN {text} END) COLLATE \"C\""
        return f"CASE WHEN json_typeof({json_value}) = 'number' THEN CAST({text} AS numeric) END"
    path, column = _json_path(field), _column(field, table)
    if dialect in MYSQL_NAMES:
        extract = f"JSON_EXTRACT({column}, {path})"
        if kind == "string":
            return (
                f"CASE WHEN JSON_TYPE({extract}) = 'STRING' THEN CONVERT(JSON_UNQUOTE({extract})"
                " USING utf8mb4) COLLATE utf8mb4_bin END"
            )
        return (
            f"CASE WHEN JSON_TYPE({extract}) IN {MYSQL_NUMBERS}"
            f" THEN CAST(JSON_UNQUOTE({extract}) AS DOUBLE) END"
        )
    kinds = "'text'" if kind == "string" else "'integer', 'real'"
    extract = f"json_extract({column}, {path})"
    return f"CASE WHEN json_type({column}, {path}) IN ({kinds}) THEN {extract} END"


def is_expr(field: FieldPath, value: bool | None, dialect: str, table: str = "") -> str:
    """``is.null`` (missing or JSON null), ``is.true``, ``is.false``."""
    if dialect == "postgresql":
        json_value, text = _pg_path(field, table, text=False), _pg_path(field, table, text=True)
        if value is None:
            return f"{text} IS NULL"
        return f"(json_typeof({json_value}) = 'boolean' AND {text} = '{str(value).lower()}')"
    path, column = _json_path(field), _column(field, table)
    if dialect in MYSQL_NAMES:
        extract = f"JSON_EXTRACT({column}, {path})"
        if value is None:
            return f"({extract} IS NULL OR JSON_TYPE({extract}) = 'NULL')"
        literal = str(value).lower()
        return f"(JSON_TYPE({extract}) = 'BOOLEAN' AND JSON_UNQUOTE({extract}) = '{literal}')"
    if value is None:
        return f"json_extract({column}, {path}) IS NULL"
    return f"json_type({column}, {path}) = '{str(value).lower()}'"


def bind_number(value: int | float, dialect: str) -> Any:
    """A number as each driver compares it exactly with the column's expression."""
    if dialect == "postgresql":
        return Decimal(value) if isinstance(value, int) else Decimal(str(value))
    if dialect in MYSQL_NAMES or not -(2**63) <= value < 2**63:
        # SQLite binds 64-bit integers only; past them it stores doubles anyway.
        return float(value)
    return value


def kind_of(value: Scalar) -> Kind:
    return "string" if isinstance(value, str) else "number"


def column_name(field: FieldPath, kind: Kind) -> str:
    """The MySQL/MariaDB generated column that holds a field's ``value_expr`` once it is
    indexed (``storage.field_index``), shared by every topic: ``lf_<digest>``."""
    return "lf_" + hashlib.sha256(f"{field.name}:{kind}".encode()).hexdigest()[:10]


def conditions(
    filters: Filters,
    dialect: str,
    *,
    table: str = "",
    prefix: str = "f",
    columns: frozenset[str] = frozenset(),
) -> list[tuple[str, dict[str, Any]]]:
    """Each filter as a SQL condition and the values it binds (as ``:<prefix><n>…``);
    on MySQL/MariaDB, ``columns`` are the indexed fields' generated columns to seek."""
    found = []
    for n, item in enumerate(filters.items):
        values: dict[str, Any] = {}
        sql = _condition(item, f"{prefix}{n}", values, dialect, table)
        if dialect in MYSQL_NAMES and columns:
            sql = _through_column(item, f"{prefix}{n}", sql, table, columns)
        found.append((sql, values))
    return found


def where_sql(
    filters: Filters,
    dialect: str,
    *,
    table: str = "",
    prefix: str = "f",
    columns: frozenset[str] = frozenset(),
) -> tuple[str, dict[str, Any]]:
    """`` AND …`` for each filter (empty without filters) and the values it binds."""
    sql, values = "", {}
    for condition, bound in conditions(
        filters, dialect, table=table, prefix=prefix, columns=columns
    ):
        sql += " AND " + condition
        values.update(bound)
    return sql, values


# The operator a generated column (strings cut to 255 characters, as bytes) is sought
# with: a string passes the exact comparison only if its prefix passes this one.
PREFIX_OPERATORS = {"eq": "=", "lt": "<=", "lte": "<=", "gt": ">=", "gte": ">="}


def _through_column(
    item: Filter, name: str, exact: str, table: str, columns: frozenset[str]
) -> str:
    """``exact``, preceded by a seek of the field's generated column where it has one."""
    if item.op not in PREFIX_OPERATORS or item.value is None or isinstance(item.value, bool):
        return exact
    kind = kind_of(item.value)
    column = column_name(item.field, kind)
    if column not in columns:
        return exact
    if kind == "number":
        return f"{table}{column} {SQL_OPERATORS[item.op]} :{name}"
    seek = f"CAST(LEFT(:{name}, 255) AS BINARY)"
    return f"{table}{column} {PREFIX_OPERATORS[item.op]} {seek} AND {exact}"


def _condition(item: Filter, name: str, values: dict[str, Any], dialect: str, table: str) -> str:
    field = item.field
    if item.op == "is":
        if not (item.value is None or isinstance(item.value, bool)):  # pragma: no cover
            raise TypeError("is takes null, true or false")
        return is_expr(field, item.value, dialect, table)
    if item.op == "in":
        parts = []
        for kind in ("string", "number"):
            binds = []
            for m, listed in enumerate(item.values):
                if kind_of(listed) == kind:
                    values[f"{name}_{m}"] = _bound(listed, dialect)
                    binds.append(f":{name}_{m}")
            if binds:
                parts.append(f"{_compared(field, kind, dialect, table)} IN ({', '.join(binds)})")
        return "(" + " OR ".join(parts) + ")"
    value = item.value
    if value is None or isinstance(value, bool):  # pragma: no cover - parse_filter refuses it
        raise TypeError(f"{item.op} needs a string or a number")
    values[name] = _bound(value, dialect)
    expr = _compared(field, kind_of(value), dialect, table)
    return f"{expr} {SQL_OPERATORS[item.op]} :{name}"


def _compared(field: FieldPath, kind: Kind, dialect: str, table: str) -> str:
    """``value_expr`` as a comparison reads it: MySQL/MariaDB compare strings as bytes,
    since their binary collations ignore trailing spaces ("SCL" = "SCL ")."""
    expr = value_expr(field, kind, dialect, table)
    return f"CAST({expr} AS BINARY)" if kind == "string" and dialect in MYSQL_NAMES else expr


def _bound(value: str | int | float, dialect: str) -> Any:
    return value if isinstance(value, str) else bind_number(value, dialect)
