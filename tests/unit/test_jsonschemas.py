"""JSON Schema contracts: compiling, pointers, backward compatibility, dead-letter reasons."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from latam.errors import InvalidRequest
from latam.jsonschemas import (
    MAX_REASON_BYTES,
    Violation,
    backward_problems,
    compile_schema,
    parse_violation,
    pointer,
    violation_reason,
)

BASE: dict[str, Any] = {
    "type": "object",
    "required": ["flight"],
    "properties": {
        "flight": {"type": "string", "maxLength": 8},
        "delay_min": {"type": "number", "minimum": 0},
        "status": {"enum": ["ON_TIME", "DELAYED", "CANCELLED"]},
        "legs": {"type": "array", "items": {"type": "string"}},
    },
}


def changed(**properties: Any) -> dict[str, Any]:
    return {**BASE, "properties": {**BASE["properties"], **properties}}


def test_pointers_escape_tilde_and_slash() -> None:
    assert pointer("/messages/3/data", ["a/b", "c~d", 0]) == "/messages/3/data/a~1b/c~0d/0"
    assert pointer("", []) == ""


def test_violations_point_into_the_request_body() -> None:
    schema = compile_schema(BASE)
    found = schema.violations({"delay_min": -1, "legs": ["SCL", 5]}, "/messages/2/data")
    assert {v.pointer for v in found} == {
        "/messages/2/data",
        "/messages/2/data/delay_min",
        "/messages/2/data/legs/1",
    }
    assert schema.violations({"flight": "LA800"}, "/data") == []
    assert len(schema.violations({"legs": list(range(50))}, "", limit=3)) == 3


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ({**BASE, "required": ["flight", "gate"]}, ["/: new required field(s) gate"]),
        (changed(delay_min={"type": "integer", "minimum": 0}), ["/delay_min: type no longer"]),
        (changed(delay_min={"type": "number", "minimum": 5}), ["/delay_min: minimum goes from"]),
        (changed(flight={"type": "string", "maxLength": 4}), ["/flight: maxLength goes from"]),
        (changed(status={"enum": ["ON_TIME"]}), ['/status: enum no longer allows "DELAYED"']),
        (changed(legs={"type": "array", "items": {"type": "integer"}}), ["/legs/*: type"]),
        ({**BASE, "additionalProperties": False}, ["/: properties the schema does not name"]),
        (changed(gate={"type": "string"}), ["/gate: type no longer allows"]),
        (changed(flight={"type": "string", "pattern": "^LA"}), ["/flight: pattern"]),
        ({**BASE, "anyOf": [{"required": ["a"]}]}, ["cannot prove", "'anyOf'"]),
        (False, ["rejects every value"]),
    ],
)
def test_backward_refusals_say_why(new: object, expected: list[str]) -> None:
    problems = " | ".join(backward_problems(BASE, new))
    for words in expected:
        assert words in problems, problems


@pytest.mark.parametrize(
    "new",
    [
        BASE,
        True,
        {},
        {**BASE, "required": []},
        changed(delay_min={"type": ["number", "null"]}),
        changed(delay_min={"type": "number", "minimum": -10}),
        changed(status={"enum": ["ON_TIME", "DELAYED", "CANCELLED", "DIVERTED"]}),
        changed(flight={"type": "string", "maxLength": 10, "description": "IATA code"}),
        changed(gate={"type": "string"}) | {"required": ["flight"]},
        {k: v for k, v in BASE.items() if k != "properties"},
    ],
)
def test_looser_or_equal_versions_are_compatible(new: object) -> None:
    # changed(gate=...) is not looser: an unnamed "gate" used to be anything.
    problems = backward_problems(BASE, new)
    if isinstance(new, dict) and "gate" in new.get("properties", {}):
        assert problems
    else:
        assert problems == []


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"type": "objekt"}, "not valid JSON Schema 2020-12"),
        ("text", "must be a JSON object"),
        ({"$schema": "http://json-schema.org/draft-04/schema#"}, "draft 2020-12"),
        ({"$ref": "https://example.com/schema.json"}, "Retrieval is disabled"),
        ({"description": "x" * 70_000}, "larger than"),
        ({"const": 2**70}, "cannot be stored as JSON"),
        ({"$ref": "#/$defs/missing"}, "missing' does not exist"),
        ({"$ref": "other.json"}, "not present in a registry"),
        (functools.reduce(lambda inner, _: {"not": inner}, range(400), {}), "nested too deeply"),
    ],
)
def test_invalid_schemas_are_named(document: object, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        compile_schema(document)


def test_a_backtracking_pattern_cannot_hang() -> None:
    schema = compile_schema({"properties": {"a": {"pattern": "^(a+)+$"}}})
    assert not schema.is_valid({"a": "a" * 50_000 + "!"})


def test_reason_holds_what_fits_and_parses_back() -> None:
    many = [Violation(f"/field{i}", "é is not of type integer" * 3) for i in range(100)]
    reason = violation_reason(4, many)
    assert len(reason.encode()) <= MAX_REASON_BYTES
    parsed = parse_violation(reason)
    assert parsed is not None
    version, errors = parsed
    assert version == 4
    assert 0 < len(errors) < 100
    assert errors[0] == {"pointer": "/field0", "message": many[0].message}
    assert parse_violation("invalid_json") is None
    assert parse_violation("schema_violation: {broken") is None
