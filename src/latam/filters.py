"""Field filters on message reads, PostgREST-style: ``data.flight=eq.LA800``.

A filter names a field of a message (``data.<key>[.<key>…]`` or ``attributes.<key>``),
an operator and a value. This module parses and checks them; each store turns them into
SQL (``storage.filter_sql``) with the values bound, so a filter is evaluated by the
database, never by loading rows into Python.

Values are typed as JSON is: a value that parses as a JSON number compares numerically
and matches only numbers; ``"…"`` forces a string; ``true``/``false``/``null`` are
literals (``is`` only); anything else is a string. A comparison never matches a value of
another type, a missing field or a JSON null: only ``is.null`` matches those. Strings
compare by code point on every store. Attribute values are strings, always.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import orjson

from latam.errors import InvalidQuery

Op = Literal["eq", "neq", "lt", "lte", "gt", "gte", "in", "is"]
OPERATORS: tuple[Op, ...] = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "is")
SQL_OPERATORS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
# One value of a filter: a string, a number, or (``is`` only) True, False or None.
Scalar = str | int | float | bool | None

MAX_FILTERS = 20
MAX_IN_VALUES = 100
MAX_VALUE_CHARS = 1024
MAX_DEPTH = 8
# A key of a path: letters (any script), digits, ``_`` and ``-``, as most JSON keys are.
# Paths are written into SQL as literals (so that an expression index matches them),
# which this grammar makes safe; values are always bound parameters.
KEY = re.compile(r"[^\W][\w-]{0,63}|_[\w-]{0,63}")
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
ROOTS = ("data", "attributes")


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A field of a message: ``root`` is ``data`` or ``attributes``, ``keys`` the keys
    under it (an attribute has exactly one)."""

    root: str
    keys: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join((self.root, *self.keys))


@dataclass(frozen=True, slots=True)
class Filter:
    """``field op value``; ``values`` holds the list of ``in``, ``value`` the others."""

    field: FieldPath
    op: Op
    value: Scalar = None
    values: tuple[str | int | float, ...] = ()


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters of one request, all of which a message must pass."""

    items: tuple[Filter, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def key(self) -> str:
        """A short digest of the filters, bound into the cursors of filtered pages so that
        a cursor continues only a page of the same filters ("" when there are none)."""
        if not self.items:
            return ""
        # Past 64 bits orjson writes no integer: those go as text, marked as numbers.
        text = orjson.dumps(
            [
                [f.field.name, f.op, _keyed(f.value), [_keyed(v) for v in f.values]]
                for f in self.items
            ]
        )
        return hashlib.sha256(text).hexdigest()[:12]


NO_FILTERS = Filters()


def _keyed(value: Scalar) -> Scalar | list[str]:
    """``value`` as orjson writes it into ``Filters.key``."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return ["int", str(value)]
    return value


def parse_path(text: str, *, param: str | None = None) -> FieldPath:
    """``data.a.b`` or ``attributes.k``; InvalidQuery naming ``param`` otherwise."""
    name = param or text
    root, _, rest = text.partition(".")
    keys = tuple(rest.split(".")) if rest else ()
    if root not in ROOTS or not keys:
        raise InvalidQuery(
            f"{text!r} is not a field: use data.<key>[.<key>...] or attributes.<key>",
            field=name,
        )
    if len(keys) > MAX_DEPTH or not all(KEY.fullmatch(key) for key in keys):
        raise InvalidQuery(
            f"{text!r} is not a valid path: keys are letters, digits, '_' and '-', at most"
            f" 64 characters each and {MAX_DEPTH} deep",
            field=name,
        )
    if root == "attributes" and len(keys) != 1:
        raise InvalidQuery(
            "attributes are flat: use attributes.<key>",
            field=name,
        )
    return FieldPath(root, keys)


def parse_filters(params: Iterable[tuple[str, str]], *, reserved: Iterable[str]) -> Filters:
    """The filters among a request's query ``params``; parameters in ``reserved`` are the
    endpoint's own. An unknown parameter is refused rather than ignored: a misspelt
    filter would otherwise return every message."""
    own = set(reserved)
    items: list[Filter] = []
    for name, raw in params:
        if name in own:
            continue
        if not name.startswith(ROOTS):
            raise InvalidQuery(
                f"unknown query parameter {name!r}; filters are data.<path> or attributes.<key>",
                field=name,
            )
        items.append(parse_filter(name, raw))
    if len(items) > MAX_FILTERS:
        raise InvalidQuery(f"at most {MAX_FILTERS} filters per request", field=items[-1].field.name)
    return Filters(tuple(items))


def parse_filter(name: str, raw: str) -> Filter:
    """One ``name=op.value`` parameter."""
    field = parse_path(name)
    op, dot, text = raw.partition(".")
    if not dot or op not in OPERATORS:
        raise InvalidQuery(
            f"{raw[:40]!r} has no known operator: use one of {', '.join(OPERATORS)}"
            " followed by a dot and the value (data.flight=eq.LA800)",
            field=name,
        )
    if len(text) > MAX_VALUE_CHARS * (MAX_IN_VALUES if op == "in" else 1):
        raise InvalidQuery("the value is too long", field=name)
    flat = field.root == "attributes"
    if op == "in":
        values = _in_values(text, name, flat=flat)
        _check_nul(values, name)
        return Filter(field, "in", values=values)
    value = _scalar(text, flat=flat)
    _check_nul((value,), name)
    if op == "is":
        if text not in {"null", "true", "false"}:
            raise InvalidQuery("is takes null, true or false (is.null)", field=name)
        if flat and text != "null":
            raise InvalidQuery("attribute values are strings: only is.null applies", field=name)
        return Filter(field, "is", None if text == "null" else text == "true")
    if value is None or isinstance(value, bool):
        raise InvalidQuery(
            f"{op}.{text} compares with a literal: use is.{text} for null, true and false",
            field=name,
        )
    return Filter(field, op, value)


def _check_nul(values: Iterable[Scalar], name: str) -> None:
    """No store compares U+0000 as the others do (PostgreSQL cannot bind it at all)."""
    if any(isinstance(value, str) and "\x00" in value for value in values):
        raise InvalidQuery("a value cannot contain U+0000", field=name)


def _scalar(text: str, *, flat: bool) -> Scalar:
    """A value typed as the module docstring says; on attributes always a string."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return _quoted(text)
    if flat:
        return text
    if text in {"true", "false"}:
        return text == "true"
    if text == "null":
        return None
    if NUMBER.fullmatch(text):
        number = float(text)
        if number != number or number in {float("inf"), float("-inf")}:
            return text
        # An integer stays exact at any size: PostgreSQL compares it exactly, and the
        # stores that cannot bind it (past 64 bits) get it as a double (filter_sql).
        integral = "." not in text and "e" not in text.lower()
        return int(text) if integral else number
    return text


def _quoted(text: str) -> str:
    """``"…"`` as JSON decodes it (so ``\\"`` is a quote), else its inside as written."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text[1:-1]
    return value if isinstance(value, str) else text[1:-1]


def _in_values(text: str, name: str, *, flat: bool) -> tuple[str | int | float, ...]:
    """``(a,b,"c,d")``: 1 to MAX_IN_VALUES strings or numbers."""
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise InvalidQuery("in takes a list in parentheses: in.(A,B)", field=name)
    parts = _split(text[1:-1], name)
    if not 1 <= len(parts) <= MAX_IN_VALUES:
        raise InvalidQuery(f"in takes 1 to {MAX_IN_VALUES} values, not {len(parts)}", field=name)
    values: list[str | int | float] = []
    for part in parts:
        value = _scalar(part, flat=flat)
        if value is None or isinstance(value, bool):
            raise InvalidQuery(f"in compares strings and numbers, not {part}", field=name)
        values.append(value)
    return tuple(values)


def _split(text: str, name: str) -> list[str]:
    """Comma-separated items; an item in double quotes may hold commas (and ``\\"``)."""
    if not text:
        return []
    parts: list[str] = []
    i = 0
    while i <= len(text):
        if i < len(text) and text[i] == '"':
            end = i + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                raise InvalidQuery("a quoted value in the list is not closed", field=name)
            parts.append(text[i : end + 1])
            i = end + 1
            if i < len(text) and text[i] != ",":
                raise InvalidQuery("a quoted value must be followed by a comma", field=name)
        else:
            end = text.find(",", i)
            end = len(text) if end < 0 else end
            parts.append(text[i:end])
            i = end
        i += 1
    return parts
