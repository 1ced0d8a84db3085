"""Terraform parsed by python-hcl2 (``parse``), and the little evaluation the infra contract
needs (``Evaluator``): strings and templates, ``local.*``, objects, tuples, ``for``
expressions, indexing, comparisons, ``merge`` and a few other functions, conditionals.
Variables, heredocs and other functions are ``Unknown``; references to resources stay
symbolic (``Ref("google_service_account.api.member")``); a conditional on an unknown value
is a ``Choice`` of both branches, whose keys ``merge`` and ``items_of`` unite.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hcl2
from hcl2.utils import process_escape_sequences
from lark import Token, Tree
from lark.exceptions import LarkError, UnexpectedInput, UnexpectedToken

Node = Tree[Token]


class HclError(ValueError):
    """The text is not HCL python-hcl2 can parse; says where."""


@dataclass(frozen=True)
class Attribute:
    expr: Node
    line: int
    source: str  # the expression as written, e.g. "local.image"


@dataclass
class Block:
    type: str
    labels: list[str]
    body: Body
    line: int


@dataclass
class Body:
    attributes: dict[str, Attribute] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def blocks_of(self, kind: str) -> Iterator[Block]:
        return (block for block in self.blocks if block.type == kind)


def _kids(tree: Node) -> list[Node]:
    """The sub-trees of ``tree``, without punctuation, newlines and comments."""
    return [c for c in tree.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _word(tree: Node) -> str:
    """A name (identifier, keyword) or a plain string: a block label or an attribute name."""
    if tree.data == "string":
        return "".join(str(part.children[0]) for part in _kids(tree))
    return str(tree.children[0])


def parse(text: str) -> Body:
    """The body of one ``.tf`` file."""
    try:
        tree = hcl2.parses_to_tree(text)
    except UnexpectedInput as exc:
        expected: set[str] = exc.expected if isinstance(exc, UnexpectedToken) else set()
        what = "unterminated string" if "DBLQUOTE" in expected and "NAME" not in expected else ""
        raise HclError(f"line {exc.line}: {what or str(exc).splitlines()[0]}") from exc
    except LarkError as exc:
        raise HclError(str(exc).splitlines()[0]) from exc
    return _body(_kids(tree)[0], text)


def _body(tree: Node, text: str) -> Body:
    body = Body()
    for item in _kids(tree):
        parts = _kids(item)
        if item.data == "attribute":
            source = text[parts[1].meta.start_pos : parts[1].meta.end_pos]
            body.attributes[_word(parts[0])] = Attribute(parts[1], item.meta.line, source)
        else:
            labels = [_word(part) for part in parts[1:-1]]
            body.blocks.append(
                Block(_word(parts[0]), labels, _body(parts[-1], text), item.meta.line)
            )
    return body


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Unknown:  # a value only known at plan or apply time
    reason: str


@dataclass(frozen=True)
class Ref:  # a reference to another object's attribute, kept symbolic
    path: str

    def resource(self) -> str:
        """``type.name`` (or ``data.type.name``) of the referenced object."""
        head = self.path.split("[")[0].split(".")
        return ".".join(head[:3] if head[0] == "data" else head[:2])


@dataclass(frozen=True)
class Choice:  # one of several values, chosen by a condition only known at plan time
    options: tuple[Any, ...]


class TfSet(list[Any]):
    """A set (``toset``): iterated, its keys are its elements, not positions."""


LOCALS = Unknown("local")  # the namespace (by identity): ``local.NAME`` resolves NAME
OPAQUE = {"var", "each", "count", "path", "terraform", "self"}  # unless bound in scope


def known(value: Any) -> bool:
    """True when ``value`` (and everything in it) is a plain Python value."""
    if isinstance(value, dict | list):
        return all(map(known, value.values() if isinstance(value, dict) else value))
    return not isinstance(value, Unknown | Ref | Choice)


def items_of(value: Any) -> dict[Any, Any] | None:
    """Key -> value of a map, a list (index -> item) or a set (item -> item), as ``for``
    and ``for_each`` see them; a ``Choice``: the union of its options; None if unknown."""
    if isinstance(value, Choice):
        found = [items_of(option) for option in value.options]
        return None if None in found else {k: v for f in found for k, v in (f or {}).items()}
    if isinstance(value, TfSet):
        return {item: item for item in value}
    if isinstance(value, list):
        return dict(enumerate(value))
    return dict(value) if isinstance(value, dict) else None


def _string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value if isinstance(value, str) else Unknown(f"tostring of {value!r}")


def _merge(*maps: Any) -> Any:
    found = [items_of(m) if isinstance(m, Choice) else m for m in maps]
    if not all(isinstance(f, dict) or f is None for f in found):
        return Unknown("merge of something that is not a map")
    return {k: v for f in found for k, v in (f or {}).items()}


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "merge": _merge, "tostring": _string, "toset": lambda items: TfSet(sorted(set(items))),
    "tolist": list, "tomap": dict, "keys": sorted, "length": len, "upper": str.upper,
    "values": lambda mapping: [mapping[key] for key in sorted(mapping)],
    "concat": lambda *lists: [item for items in lists for item in items],
    "flatten": lambda lists: [item for items in lists for item in items],
}  # fmt: skip
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
    "<=": operator.le, ">=": operator.ge, "+": operator.add, "-": operator.sub,
    "*": operator.mul, "/": operator.truediv, "%": operator.mod,
    "&&": lambda a, b: a and b, "||": lambda a, b: a or b,
}  # fmt: skip


class Evaluator:
    """Evaluates expressions against a module's ``locals`` (merged from every file)."""

    def __init__(self, locals_: dict[str, Attribute]) -> None:
        self.locals = locals_
        self._values: dict[str, Any] = {}
        self._busy: set[str] = set()

    def local(self, name: str) -> Any:
        if name not in self.locals or name in self._busy:
            raise HclError(f"local.{name} is not defined, or refers to itself")
        if name not in self._values:
            self._busy.add(name)
            self._values[name] = self.eval(self.locals[name].expr)
            self._busy.discard(name)
        return self._values[name]

    def eval(self, expr: Node, scope: dict[str, Any] | None = None) -> Any:
        scope, kind, kids = scope or {}, str(expr.data), _kids(expr)
        token = next((str(c) for c in expr.children if isinstance(c, Token)), "")
        if kind in ("expr_term", "interpolation"):
            return self.eval(kids[0], scope)
        if kind in ("int_lit", "float_lit"):
            return float(token) if kind == "float_lit" else int(token)
        if kind == "literal_value":
            return {"true": True, "false": False, "null": None}[token]
        if kind == "string":
            return self._template([part.children[0] for part in kids], scope)
        if kind == "identifier":
            if token in scope or token == "local":
                return scope.get(token, LOCALS)
            return Unknown(token) if token in OPAQUE else Ref(token)
        if kind == "get_attr_expr_term":
            return self._get(self.eval(kids[0], scope), _word(_kids(kids[1])[0]))
        if kind == "index_expr_term":
            index = kids[1]
            short = index.data == "short_index"
            key = int(str(index.children[1])) if short else self.eval(_kids(index)[0], scope)
            return self._get(self.eval(kids[0], scope), key, index=True)
        if kind == "tuple":
            return [self.eval(item, scope) for item in kids]
        if kind == "object":
            return self._object(kids, scope)
        if kind == "function_call":
            return self._call(expr, scope)
        if kind in ("for_tuple_expr", "for_object_expr"):
            return self._for(expr, scope)
        if kind == "conditional":
            condition = self.eval(kids[0], scope)
            if isinstance(condition, bool):
                return self.eval(kids[1] if condition else kids[2], scope)
            branches = [self.eval(kids[1], scope), self.eval(kids[2], scope)]
            return Choice(tuple(o for b in branches for o in _options(b)))
        if kind == "binary_op":
            op, right = _kids(kids[1])
            left, right = self.eval(kids[0], scope), self.eval(right, scope)
            if not (known(left) and known(right)):
                return Unknown("an operation on an unknown value")
            return _safely(OPERATORS[_word(op)], left, right)
        return Unknown(f"a {kind}")  # heredocs, splats, "!x", ...

    def _template(self, parts: list[Any], scope: dict[str, Any]) -> Any:
        if any(isinstance(p, Tree) and p.data != "interpolation" for p in parts):
            return Unknown("a template directive (%{if}, %{for})")
        values = [
            self.eval(p, scope)
            if isinstance(p, Tree)
            else str(p)[1:]  # $${x} is the text ${x}
            if p.type == "ESCAPED_INTERPOLATION"
            else process_escape_sequences(str(p))
            for p in parts
        ]
        if len(parts) == 1 and isinstance(parts[0], Tree):
            return values[0]  # "${x}" is x itself, unconverted
        texts = [_string(v) if known(v) else v for v in values]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
        return Unknown("a template with an unknown part")

    def _get(self, obj: Any, name: Any, *, index: bool = False) -> Any:
        if obj is LOCALS:
            return self.local(str(name))
        if isinstance(obj, Ref):
            key = json.dumps(name) if known(name) else "*"
            return Ref(f"{obj.path}[{key}]" if index else f"{obj.path}.{name}")
        if isinstance(obj, Choice):
            return Choice(tuple(self._get(option, name, index=index) for option in obj.options))
        if isinstance(obj, dict | list):
            return _safely(operator.getitem, obj, name)
        return Unknown(f"[{name!r}] of {obj!r}")

    def _object(self, elements: list[Node], scope: dict[str, Any]) -> Any:
        result: dict[str, Any] = {}
        for element in elements:
            key_tree, value = _kids(element)
            key_kids = _kids(key_tree)
            term = _kids(key_kids[0]) if key_kids and key_kids[0].data == "expr_term" else []
            if not key_kids or (term and term[0].data == "identifier"):  # a bare name: `a = 1`
                key = _word(term[0] if term else key_tree)
            elif not isinstance(key := _string(self.eval(key_kids[0], scope)), str):
                return Unknown("an object with an unknown key")
            result[key] = self.eval(value, scope)
        return result

    def _call(self, expr: Node, scope: dict[str, Any]) -> Any:
        names = [_word(k) for k in _kids(expr) if k.data == "identifier"]
        arguments = next((k for k in _kids(expr) if k.data == "arguments"), None)
        args = [self.eval(arg, scope) for arg in (_kids(arguments) if arguments else [])]
        if arguments and "..." in arguments.children:  # f(list...)
            args = args[:-1] + args[-1] if isinstance(args[-1], list) else [Unknown("...")]
        function = FUNCTIONS.get(names[0]) if len(names) == 1 else None
        if function is None or (
            function is not _merge and any(isinstance(a, Unknown | Ref | Choice) for a in args)
        ):
            return Unknown(f"{names[-1]}()")
        return _safely(function, *args)

    def _for(self, expr: Node, scope: dict[str, Any]) -> Any:
        intro, *rest = _kids(expr)
        *names, collection_expr = _kids(intro)
        collection = self.eval(collection_expr, scope)
        pairs = None if isinstance(collection, Choice) else items_of(collection)
        if pairs is None or "..." in expr.children:  # unknown, or grouping (not needed)
            return Unknown("a for expression over an unknown collection")
        condition = rest.pop() if rest[-1].data == "for_cond" else None
        items: list[tuple[Any, Any]] = []
        for key, value in sorted(pairs.items()) if isinstance(collection, dict) else pairs.items():
            inner = dict(scope, **{_word(names[-1]): value})
            if len(names) == 2:
                inner[_word(names[0])] = key
            keep = self.eval(_kids(condition)[0], inner) if condition else True
            if not isinstance(keep, bool):
                return Unknown("a for expression with an unknown condition")
            if keep:
                name = _string(self.eval(rest[0], inner)) if len(rest) == 2 else None
                items.append((name, self.eval(rest[-1], inner)))
        if len(rest) == 1:
            return [item for _, item in items]
        if not all(isinstance(name, str) for name, _ in items):
            return Unknown("a for expression with an unknown key")
        return dict(items)


def _options(value: Any) -> tuple[Any, ...]:
    return value.options if isinstance(value, Choice) else (value,)


def _safely(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError):
        return Unknown(f"{getattr(function, '__name__', 'a function')} of values it does not take")
