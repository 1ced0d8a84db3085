"""Which fields of each message an export writes, and their values.

A field is a top-level name of a message (``message_id``, ``published_at``,
``ingested_at``, ``schema_version``, ``attributes``, ``data``) or a path into it
(``data.flight``, ``data.route.origin``, ``attributes.source``, as filters name them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from latam.domain import dumps_exact, isoformat, loads_exact
from latam.errors import InvalidQuery
from latam.filters import FieldPath, parse_path
from latam.storage.port import StoredMessage

TOP_LEVEL = ("message_id", "published_at", "ingested_at", "schema_version", "attributes", "data")
DEFAULT_FIELDS = ("message_id", "published_at", "ingested_at", "data")
MAX_FIELDS = 50


class Missing:
    """A path the message does not have (written as null or an empty cell)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()


class RawJson(str):
    """JSON text as stored (``data``, ``attributes``): written as is, never re-encoded."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Column:
    """One field of the export: ``path`` None for a top-level name."""

    name: str
    path: FieldPath | None = None


def parse_fields(text: str | None, *, param: str = "fields") -> tuple[Column, ...]:
    """``message_id,data.flight,…`` (the default fields when ``text`` is None)."""
    if text is None:
        return tuple(Column(name) for name in DEFAULT_FIELDS)
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise InvalidQuery("fields is a comma-separated list of field names", field=param)
    if len(names) > MAX_FIELDS:
        raise InvalidQuery(f"at most {MAX_FIELDS} fields per export", field=param)
    if len(set(names)) != len(names):
        dup = next(name for name in names if names.count(name) > 1)
        raise InvalidQuery(f"{dup!r} is named twice", field=param)
    columns = []
    for name in names:
        if name in TOP_LEVEL:
            columns.append(Column(name))
            continue
        if "." not in name:
            raise InvalidQuery(
                f"{name!r} is not a field: use {', '.join(TOP_LEVEL)},"
                " data.<key>[.<key>...] or attributes.<key>",
                field=param,
            )
        columns.append(Column(name, parse_path(name, param=param)))
    return tuple(columns)


def _dig(document: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return MISSING
        document = document[key]
    return document


def row_values(message: StoredMessage, columns: tuple[Column, ...]) -> list[Any]:
    """The value of each column: ``RawJson`` for ``data``/``attributes``, ``datetime``
    for the timestamps, parsed JSON (numbers exact) for paths, ``MISSING`` when absent."""
    parsed: dict[str, Any] = {}
    values: list[Any] = []
    for column in columns:
        path = column.path
        if path is None:
            values.append(_top_level(message, column.name))
            continue
        if path.root not in parsed:
            text = message.data if path.root == "data" else message.attributes
            parsed[path.root] = loads_exact(text.encode())
        values.append(_dig(parsed[path.root], path.keys))
    return values


def _top_level(message: StoredMessage, name: str) -> Any:
    if name == "message_id":
        return message.message_id
    if name in ("data", "attributes"):
        return RawJson(message.data if name == "data" else message.attributes)
    value: Any = getattr(message, name)
    return value


def json_text(value: Any) -> str:
    """A value as compact JSON text (``RawJson`` as stored, timestamps ISO 8601)."""
    if isinstance(value, RawJson):
        return str(value)
    if isinstance(value, datetime):
        return orjson.dumps(isoformat(value)).decode()
    return dumps_exact(value).decode()


def as_text(value: Any) -> str:
    """A value as one cell of text: strings as they are, ``RawJson`` as stored,
    timestamps ISO 8601, null and missing empty, anything else its JSON text."""
    if isinstance(value, str):
        return str(value)
    if value is None or value is MISSING:
        return ""
    if isinstance(value, datetime):
        return isoformat(value)
    return dumps_exact(value).decode()


def as_json(value: Any) -> Any:
    """A value orjson writes as the export's JSON (missing as null, numbers exact)."""
    if isinstance(value, RawJson):
        return orjson.Fragment(str(value))
    if value is MISSING:
        return None
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, bool) or (isinstance(value, int) and -(2**63) <= value < 2**64):
        return value
    if isinstance(value, Decimal | int | dict | list):
        # Numbers beyond 64 bits and long decimals, which orjson cannot write exactly.
        return orjson.Fragment(dumps_exact(value))
    return value
