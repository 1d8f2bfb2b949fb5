"""A compiler for the FHIRPath subset that R4 SearchParameter expressions use
(http://hl7.org/fhir/R4/searchparameter-definitions.html, http://hl7.org/fhirpath/N1/).

Search indexing evaluates every applicable expression on every stored resource, so each
(expression, resource type) pair is parsed and type-checked once into a chain of closures
that walk the resource dict directly. Every value carries its FHIR type, derived from the
registry's element definitions while compiling, so the indexer knows how to read it (a
`value[x]` choice becomes whichever `valueQuantity`, `valueString`, ... is present).

Supported: paths, `|`, `and`, `=`, `!=`, `is`, `as`, `[n]`, `where()`, `exists()`,
`ofType()` and `resolve()` (the reference's target type, as in `where(resolve() is Patient)`).
Anything else raises ExpressionError when compiled, never silently yields nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirserver.registry import r4

Item = tuple[Any, str]  # (JSON value, FHIR type)
Evaluate = Callable[[list[Item]], list[Item]]

# http://hl7.org/fhir/R4/domainresource.html: every resource but these three is a DomainResource.
_NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})
_FUNCTIONS = {"where": 1, "exists": 0, "ofType": 1, "resolve": 0}  # name -> number of arguments
_STRING_TYPES = frozenset({"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown"})
_NUMBER_TYPES = frozenset({"integer", "decimal", "positiveInt", "unsignedInt"})
_TRUE = [(True, "boolean")]
_FALSE = [(False, "boolean")]
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<name>[A-Za-z_]\w*)|(?P<op>!=|[.()\[\]|=]))"
)
# http://hl7.org/fhir/R4/references.html#literal: [base URL/]Type/id[/_history/version]
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


class ExpressionError(ValueError):
    """An expression outside the supported subset, or one that does not fit the definitions."""


@dataclass(frozen=True)
class CompiledExpression:
    """`expression` compiled for resources of `resource_type`; `types` are the FHIR types its
    values can have, `keys` the top-level properties it reads (None: it may yield values when
    they are all absent, as `exists()` does)."""

    expression: str
    resource_type: str
    types: frozenset[str]
    keys: frozenset[str] | None
    evaluate: Evaluate

    def __call__(self, resource: dict) -> list[Item]:
        return self.evaluate([(resource, self.resource_type)])


def applies_to(base: str, resource_type: str) -> bool:
    """Whether a search parameter or path rooted at type `base` applies to `resource_type`."""
    if base == "Resource":
        return True
    if base == "DomainResource":
        return resource_type not in _NOT_DOMAIN_RESOURCES
    return base == resource_type


def parse_reference(reference: str) -> tuple[str, str] | None:
    """(type, id) of a relative or absolute literal reference whose type is an R4 resource type."""
    match = _REFERENCE.search(reference)
    if match is None or match.group(1) not in r4().resource_types:
        return None
    return match.group(1), match.group(2)


@cache
def compile_expression(expression: str, resource_type: str) -> CompiledExpression:
    """Compile `expression` for resources of `resource_type`. Union alternatives rooted at
    another resource type evaluate to nothing."""
    try:
        evaluate, types = _compile(_parse(expression), frozenset({resource_type}), True)
    except ExpressionError as error:
        raise ExpressionError(f"{error} in search expression: {expression}") from None
    keys = _root_keys(_parse(expression), resource_type)
    return CompiledExpression(expression, resource_type, types, keys, evaluate)


@cache
def compile_relative(expression: str, types: frozenset[str]) -> tuple[Evaluate, frozenset[str]]:
    """Compile `expression` for input items of the given FHIR types: the components of a composite
    parameter, whose expressions are relative to the composite's base element
    (http://hl7.org/fhir/R4/searchparameter.html, SearchParameter.component.expression)."""
    try:
        return _compile(_parse(expression), types, False)
    except ExpressionError as error:
        raise ExpressionError(f"{error} in component expression: {expression}") from None


def _root_keys(node: tuple, resource_type: str) -> frozenset[str] | None:
    """The top-level JSON properties `node` reads; None if it may yield values without them."""
    kind = node[0]
    if kind == "binary" and node[1] == "|":
        left, right = _root_keys(node[2], resource_type), _root_keys(node[3], resource_type)
        return None if left is None or right is None else left | right
    if kind == "name" and not _is_type_filter(node[1]):  # InsurancePlan: name | alias
        return frozenset(key for key, _type in _members(resource_type).get(node[1], ()))
    if kind == "path" and node[1][0] == "name" and _is_type_filter(node[1][1]) and node[2][0] == "name":
        element = node[2][1] if applies_to(node[1][1], resource_type) else ""
        return frozenset(key for key, _type in _members(resource_type).get(element, ()))
    if kind in ("index", "is", "ofType") or (kind == "path" and node[2][:2] != ("call", "exists")):
        return _root_keys(node[1], resource_type)
    return None


def _is_type_filter(name: str) -> bool:
    """A resource type name starting a path filters its input (http://hl7.org/fhirpath/N1/#path-selection)."""
    return name in r4().resource_types or name in ("Resource", "DomainResource")


@cache
def _parse(expression: str) -> tuple:
    """The syntax tree, shared by the resource types an expression is compiled for."""
    return _Parser(expression).parse()


class _Parser:
    """Precedence climbing over the FHIRPath grammar, highest last: and, = !=, |, is as, . []."""

    def __init__(self, text: str):
        self.tokens = self._tokenize(text)
        self.position = 0

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens, position, text = [], 0, text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise ExpressionError(f"unsupported syntax at {text[position : position + 20].strip()!r}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            position = match.end()
        return tokens

    def parse(self) -> tuple:
        node = self._binary(0)
        if self.position < len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.position][1]!r}")
        return node

    _LEVELS = (("and",), ("=", "!="), ("|",))

    def _binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self._type_test()
        node = self._binary(level + 1)
        while self._peek() in self._LEVELS[level]:
            operator = self._next()
            node = ("binary", operator, node, self._binary(level + 1))
        return node

    def _type_test(self) -> tuple:
        node = self._postfix()
        while self._peek() in ("is", "as"):
            node = ("is" if self._next() == "is" else "ofType", node, self._expect("name"))
        return node

    def _postfix(self) -> tuple:
        node = self._term()
        while self._peek() in (".", "["):
            if self._next() == "[":
                node = ("index", node, int(self._expect("number")))
                self._expect_op("]")
                continue
            step = self._invocation(self._expect("name"))
            # X.ofType(T) is X as T; both filter X by type (http://hl7.org/fhirpath/N1/#oftypetype-type-specifier).
            node = ("ofType", node, step[2][1]) if step[:2] == ("call", "ofType") else ("path", node, step)
        return node

    def _term(self) -> tuple:
        kind, text = self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")
        self.position += 1
        if kind == "string":
            return ("literal", [(re.sub(r"\\(.)", r"\1", text[1:-1]), "string")])
        if kind == "number":
            return ("literal", [(int(text), "integer")])
        if text in ("true", "false"):
            return ("literal", _TRUE if text == "true" else _FALSE)
        if kind == "name" and text != "ofType":  # ofType() needs an input here, see _postfix
            return self._invocation(text)
        if text == "(":
            node = self._binary(0)
            self._expect_op(")")
            return node
        raise ExpressionError(f"unexpected {text or 'end'!r}")

    def _invocation(self, name: str) -> tuple:
        if self._peek() != "(":
            return ("name", name)
        self.position += 1
        if name not in _FUNCTIONS:
            raise ExpressionError(f"unsupported function {name}()")
        argument = self._binary(0) if _FUNCTIONS[name] else ()
        self._expect_op(")")
        if name == "ofType" and argument[0] != "name":
            raise ExpressionError("ofType() needs a type name")
        return ("call", name, argument)

    def _peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _next(self) -> str:
        self.position += 1
        return self.tokens[self.position - 1][1]

    def _expect(self, kind: str) -> str:
        if self.position >= len(self.tokens) or self.tokens[self.position][0] != kind:
            raise ExpressionError(f"expected a {kind} after {self.tokens[self.position - 1][1]!r}")
        return self._next()

    def _expect_op(self, op: str) -> None:
        if self._peek() != op:
            raise ExpressionError(f"expected {op!r}")
        self.position += 1


def _empty(_items: list[Item]) -> list[Item]:
    return []


def _identity(items: list[Item]) -> list[Item]:
    return items


def _compile(node: tuple, types: frozenset[str], first: bool) -> tuple[Evaluate, frozenset[str]]:
    """Compile `node` for input items of the given FHIR types. `first`: the node starts an
    invocation chain, where a type name filters the input (`Patient.name`)."""
    kind = node[0]
    if kind == "literal":
        value = node[1]
        return (lambda _items: value), frozenset({value[0][1]})
    if not types:  # an alternative for another resource type: nothing to walk
        return _empty, frozenset()
    if kind == "name":
        return _name(node[1], types, first)
    if kind == "path":
        left, middle = _compile(node[1], types, first)
        right, out = _compile(node[2], middle, False)
        # Drop no-op steps: extraction runs every expression on every stored resource.
        if right is _empty or left is _identity:
            return right, out
        return (lambda items: right(left(items))), out
    if kind == "index":
        inner, out = _compile(node[1], types, first)
        if inner is _empty:
            return _empty, out
        position = node[2]
        return (lambda items: inner(items)[position : position + 1]), out
    if kind in ("is", "ofType"):
        return _type_operator(kind, node[1], node[2], types, first)
    if kind == "call":
        return _call(node[1], node[2], types)
    return _binary(node[1], node[2], node[3], types)


def _name(
    name: str, types: frozenset[str], first: bool, only: str | None = None
) -> tuple[Evaluate, frozenset[str]]:
    """A type filter (first in a chain), else the child elements `name`, of type `only` if given."""
    if first and _is_type_filter(name):
        matching = frozenset(t for t in types if applies_to(name, t))
        return (_identity if matching else _empty), matching
    table = {
        t: members
        for t in types
        if (members := tuple(m for m in _members(t).get(name, ()) if only in (None, m[1])))
    }
    if not table:
        of_type = f" of type {only}" if only else ""
        raise ExpressionError(f"no element {name!r}{of_type} in {', '.join(sorted(types))}")
    return _child(table), frozenset(
        member_type for members in table.values() for _key, member_type in members
    )


def _child(table: dict[str, tuple[tuple[str, str], ...]]) -> Evaluate:
    """Child elements, looked up by the input's FHIR type: JSON property -> element type."""

    def evaluate(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for value, value_type in items:
            members = table.get(value_type)
            if members is None or type(value) is not dict:
                continue
            for key, member_type in members:
                child = value.get(key)
                if type(child) is list:
                    out.extend((element, member_type) for element in child if element is not None)
                elif child is not None:
                    out.append((child, member_type))
        return out

    return evaluate


@cache
def _members(type_name: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Element name -> its (JSON property, type) pairs: one, or one per type of a choice."""
    definition = r4().types.get(type_name)
    members: dict[str, list[tuple[str, str]]] = {}
    for key, (element, member_type) in definition.properties.items() if definition else ():
        members.setdefault(element.name, []).append((key, member_type))
    return {name: tuple(pairs) for name, pairs in members.items()}


def _type_operator(
    kind: str, operand: tuple, type_name: str, types: frozenset[str], first: bool
) -> tuple[Evaluate, frozenset[str]]:
    lowered = type_name[:1].lower() + type_name[1:]
    if type_name not in r4().types and r4().is_primitive(lowered):
        type_name = lowered  # FHIRPath's System.DateTime (Observation-code-value-date) is FHIR's dateTime
    if type_name not in r4().types and not r4().is_primitive(type_name):
        raise ExpressionError(f"unknown type {type_name!r}")
    if kind == "ofType" and operand[0] == "path" and operand[2][0] == "name":
        # A choice element as T reads only its valueT property instead of testing them all.
        left, middle = _compile(operand[1], types, first)
        if not middle:
            return _empty, middle
        right, out = _name(operand[2][1], middle, False, type_name)
        if left is _identity:
            return right, out
        return (lambda items: right(left(items))), out
    inner, inner_types = _compile(operand, types, first)
    if inner is _empty:
        return _empty, inner_types
    if kind == "is":

        def test(items: list[Item]) -> list[Item]:
            found = inner(items)
            return [(found[0][1] == type_name, "boolean")] if len(found) == 1 else []

        return test, frozenset({"boolean"})
    # resolve() types its result at run time only; elsewhere the type must be possible.
    if "Resource" not in inner_types and type_name not in inner_types:
        raise ExpressionError(f"{type_name} is not a possible type of {', '.join(sorted(inner_types))}")
    return (lambda items: [item for item in inner(items) if item[1] == type_name]), frozenset({type_name})


def _call(name: str, argument: tuple, types: frozenset[str]) -> tuple[Evaluate, frozenset[str]]:
    if name == "exists":
        return (lambda items: _TRUE if items else _FALSE), frozenset({"boolean"})
    if name == "resolve":
        if "Reference" not in types:
            raise ExpressionError(f"resolve() on {', '.join(sorted(types))}")
        return _resolve, frozenset({"Resource"})
    criterion, _ = _compile(argument, types, True)
    return (lambda items: [item for item in items if criterion([item]) == _TRUE]), types


def _resolve(items: list[Item]) -> list[Item]:
    """Each reference typed as its target's resource type (from the literal reference, else
    Reference.type), for `resolve() is Type`; the server does not fetch targets here."""
    out = []
    for value, value_type in items:
        if value_type != "Reference" or type(value) is not dict:
            continue
        reference = value.get("reference")
        parts = parse_reference(reference) if isinstance(reference, str) else None
        target_type = parts[0] if parts else value.get("type")
        if isinstance(target_type, str):
            out.append((value, target_type))
    return out


def _binary(
    operator: str, left_node: tuple, right_node: tuple, types: frozenset[str]
) -> tuple[Evaluate, frozenset[str]]:
    left, left_types = _compile(left_node, types, True)
    right, right_types = _compile(right_node, types, True)
    if operator == "|" and _empty in (left, right):
        return (right, right_types) if left is _empty else (left, left_types)
    if operator == "|":  # FHIRPath's union also drops duplicates; extraction deduplicates rows instead
        return (lambda items: left(items) + right(items)), left_types | right_types
    if operator == "and":
        return (lambda items: _and(_boolean(left(items)), _boolean(right(items)))), frozenset({"boolean"})
    negate = operator == "!="

    def compare(items: list[Item]) -> list[Item]:
        a, b = left(items), right(items)
        if len(a) != 1 or len(b) != 1:
            return []
        # Values of different kinds are never equal (http://hl7.org/fhirpath/N1/#equality).
        equal = _kind(a[0][1]) == _kind(b[0][1]) and a[0][0] == b[0][0]
        return _TRUE if equal != negate else _FALSE

    return compare, frozenset({"boolean"})


def _kind(type_name: str) -> str:
    if type_name in _STRING_TYPES:
        return "string"
    return "number" if type_name in _NUMBER_TYPES else type_name


def _boolean(items: list[Item]) -> bool | None:
    """Singleton evaluation (http://hl7.org/fhirpath/N1/#singleton-evaluation-of-collections)."""
    if len(items) != 1:
        return None
    value, value_type = items[0]
    return value if value_type == "boolean" else True


def _and(a: bool | None, b: bool | None) -> list[Item]:
    if a is False or b is False:
        return _FALSE
    return _TRUE if a and b else []
