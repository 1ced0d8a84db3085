"""Data contracts in JSON Schema (draft 2020-12): compiled once, checked per message.

Pure functions and values, no I/O:

- ``compile_schema`` checks a schema document against the 2020-12 meta-schema and
  compiles it (``jsonschema-rs``, about 0.3 µs per small message). A schema cannot reach
  the network (``offline``: a remote ``$ref`` is an error, never a request) and its
  ``pattern`` regexes run on a linear-time engine, so no schema can make validation hang.
- ``Schema.violations`` lists what is wrong with one message's ``data``, each failure at
  an RFC 6901 pointer relative to the request body (``/messages/3/data/delay_min``).
- ``backward_problems`` says why a new version would reject data the previous one
  accepted (a new required field, a narrowed type, a removed enum value …), or nothing.
  It proves what it can read keyword by keyword; a changed keyword it cannot reason
  about (``anyOf``, ``$ref`` …) is reported as unproven rather than waved through.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from latam.errors import InvalidRequest

DRAFT = "https://json-schema.org/draft/2020-12/schema"
COMPATIBILITY = ("backward", "none")
# A schema document is configuration, not data: bounded like a large message.
MAX_SCHEMA_BYTES = 64 * 1024
# Failures reported per request (the first ones, in message order).
MAX_VIOLATIONS = 100
# A failure's text is cut here: an enum of a thousand values is not repeated back.
MAX_VIOLATION_TEXT = 300


@dataclass(frozen=True, slots=True)
class Violation:
    """One failure: where in the request body, and what the schema says."""

    pointer: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


def escape(token: str | int) -> str:
    """One RFC 6901 reference token: ``~`` as ``~0``, ``/`` as ``~1``."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(base: str, path: Sequence[str | int]) -> str:
    """``base`` (a pointer) extended by ``path``."""
    return base + "".join("/" + escape(token) for token in path)


class Schema:
    """A compiled schema version; validating with it never touches the network."""

    def __init__(self, document: dict[str, Any] | bool, text: str) -> None:
        import jsonschema_rs  # only where a topic has a schema: 3 MB a process otherwise

        self.document = document
        self.text = text
        self._validator = jsonschema_rs.Draft202012Validator(
            document, offline=True, pattern_options=jsonschema_rs.RegexOptions()
        )

    def is_valid(self, data: object) -> bool:
        return bool(self._validator.is_valid(data))

    def violations(self, data: object, at: str, limit: int = MAX_VIOLATIONS) -> list[Violation]:
        """The failures of ``data`` (found at pointer ``at``), at most ``limit``."""
        found: list[Violation] = []
        for error in self._validator.iter_errors(data):
            if len(found) >= limit:
                break
            text = error.message
            if len(text) > MAX_VIOLATION_TEXT:
                text = text[: MAX_VIOLATION_TEXT - 1] + "…"
            found.append(Violation(pointer(at, error.instance_path), text))
        return found


def compile_schema(document: object) -> Schema:
    """The schema compiled, or ``InvalidRequest`` naming what is wrong with it."""
    if not isinstance(document, dict | bool):
        raise InvalidRequest("schema must be a JSON object (or a boolean)", field="schema")
    try:
        text = orjson.dumps(document).decode()
    except TypeError as exc:  # orjson: nested too deeply, or an integer past 64 bits
        why = "it is nested too deeply" if "Recursion" in str(exc) else str(exc)
        raise InvalidRequest(f"schema cannot be stored as JSON: {why}", field="schema") from exc
    if len(text) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"schema is larger than {MAX_SCHEMA_BYTES} bytes", field="schema")
    if isinstance(document, dict):
        declared = document.get("$schema", DRAFT)
        if isinstance(declared, str) and declared.rstrip("#") != DRAFT:
            raise InvalidRequest(
                f"only JSON Schema draft 2020-12 is supported ($schema {declared!r})",
                field="schema",
            )
    import jsonschema_rs

    try:
        return Schema(document, text)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidRequest(f"schema is not valid JSON Schema 2020-12: {first_line}") from exc


def load_schema(text: str) -> Schema:
    """A stored schema (written by ``compile_schema``, so valid) compiled again."""
    return Schema(orjson.loads(text), text)


# -- backward compatibility -------------------------------------------------------------

# Keywords whose every change latam can judge (below); any other keyword that is added
# or changed is reported as unproven. Annotations never change what is valid.
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",  # an annotation in 2020-12 unless a format-assertion vocabulary is used
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)
JUDGED = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    }
)
ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})


def backward_problems(old: object, new: object) -> list[str]:
    """Why data valid under ``old`` may be invalid under ``new``; empty when it cannot."""
    return list(_compare(old, new, ""))


def _at(path: str) -> str:
    return path or "/"


def _types(schema: Mapping[str, Any]) -> frozenset[str]:
    value = schema.get("type")
    if value is None:
        return ALL_TYPES
    names = {value} if isinstance(value, str) else set(value)
    if "number" in names:
        names.add("integer")
    return frozenset(names)


def _compare(old: object, new: object, path: str) -> Iterator[str]:
    if new is True or new == {} or old is False or old == new:
        return
    if new is False:
        yield f"{_at(path)}: the new schema rejects every value"
        return
    if old is True or not isinstance(old, dict):
        old = {}
    if not isinstance(new, dict):
        return
    for keyword in sorted(set(new) - ANNOTATIONS):
        if keyword not in JUDGED and old.get(keyword) != new[keyword]:
            yield (
                f"{_at(path)}: cannot prove that the change of {keyword!r} keeps data valid;"
                " use compatibility 'none' to accept it"
            )
    yield from _compare_types(old, new, path)
    yield from _compare_values(old, new, path)
    yield from _compare_bounds(old, new, path)
    yield from _compare_objects(old, new, path)
    yield from _compare_arrays(old, new, path)


def _compare_types(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
    lost = _types(old) - _types(new)
    if "type" in new and lost:
        yield f"{_at(path)}: type no longer allows {', '.join(sorted(lost))}"


def _compare_values(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
    if "enum" in new:
        allowed = [orjson.dumps(v) for v in new["enum"]]
        if "const" in old:
            before = [orjson.dumps(old["const"])]
        elif "enum" in old:
            before = [orjson.dumps(v) for v in old["enum"]]
        else:
            before = []
            yield f"{_at(path)}: an enum is added"
        removed = [v.decode() for v in before if v not in allowed]
        if removed:
            yield f"{_at(path)}: enum no longer allows {', '.join(removed)}"
    same_single = "enum" in old and old["enum"] == [new.get("const")]
    if "const" in new and old.get("const") != new["const"] and not same_single:
        yield f"{_at(path)}: const {orjson.dumps(new['const']).decode()} is added or changed"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _compare_bounds(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
    # Lower bounds may only go down, upper bounds only up.
    for keyword, lower in (
        ("minimum", True),
        ("exclusiveMinimum", True),
        ("minLength", True),
        ("minItems", True),
        ("minProperties", True),
        ("maximum", False),
        ("exclusiveMaximum", False),
        ("maxLength", False),
        ("maxItems", False),
        ("maxProperties", False),
    ):
        after = _number(new.get(keyword))
        if after is None:
            continue
        before = _number(old.get(keyword))
        if before is None:
            yield f"{_at(path)}: {keyword} {new[keyword]} is added"
        elif (after > before) if lower else (after < before):
            yield f"{_at(path)}: {keyword} goes from {old[keyword]} to {new[keyword]}"
    if "multipleOf" in new:
        before, after = _number(old.get("multipleOf")), _number(new["multipleOf"])
        if before is None or after is None or not _divides(after, before):
            yield f"{_at(path)}: multipleOf {new['multipleOf']} is added or changed"
    if "pattern" in new and old.get("pattern") != new["pattern"]:
        yield f"{_at(path)}: pattern {new['pattern']!r} is added or changed"
    if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
        yield f"{_at(path)}: uniqueItems is added"


def _divides(divisor: float, value: float) -> bool:
    quotient = value / divisor
    return math.isclose(quotient, round(quotient))


def _compare_objects(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
    added = sorted(set(new.get("required", [])) - set(old.get("required", [])))
    if added:
        yield f"{_at(path)}: new required field(s) {', '.join(added)}"
    old_props: Mapping[str, Any] = old.get("properties", {})
    new_props: Mapping[str, Any] = new.get("properties", {})
    old_rest = old.get("additionalProperties", True)
    new_rest = new.get("additionalProperties", True)
    for name in sorted(set(old_props) | set(new_props)):
        yield from _compare(
            old_props.get(name, old_rest), new_props.get(name, new_rest), pointer(path, [name])
        )
    if new_rest is False and old_rest is not False:
        yield f"{_at(path)}: properties the schema does not name are no longer allowed"
    elif old_rest != new_rest:  # "/*": any property the schema does not name
        yield from _compare(old_rest, new_rest, path + "/*")


def _compare_arrays(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[str]:
    if "items" in new:
        yield from _compare(old.get("items", True), new["items"], path + "/*")  # any item


# -- dead letters -------------------------------------------------------------------------

VIOLATION = "schema_violation"
# Brokers keep a dead letter's reason in at most 1,000 bytes (Pub/Sub attribute values).
MAX_REASON_BYTES = 1000


def violation_reason(version: int, violations: Sequence[Violation]) -> str:
    """The dead-letter reason of data that failed schema ``version``: the reason name and
    a JSON object with the version and as many of the failures as fit the bound."""
    errors: list[dict[str, str]] = []
    text = f"{VIOLATION}: " + orjson.dumps({"schema_version": version, "errors": []}).decode()
    for violation in violations:
        wider = [*errors, violation.as_json()]
        found = {"schema_version": version, "errors": wider}
        candidate = f"{VIOLATION}: " + orjson.dumps(found).decode()
        if len(candidate.encode()) > MAX_REASON_BYTES:
            break
        errors, text = wider, candidate
    return text


def parse_violation(reason: str) -> tuple[int, list[dict[str, str]]] | None:
    """The schema version and failures a ``violation_reason`` holds; None for any other."""
    prefix = f"{VIOLATION}: "
    if not reason.startswith(prefix):
        return None
    try:
        found = orjson.loads(reason[len(prefix) :])
        version, errors = found["schema_version"], found["errors"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(version, int) or not isinstance(errors, list):
        return None
    return version, [e for e in errors if isinstance(e, dict)]
