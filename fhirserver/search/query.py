"""Parsing a FHIR search request into typed clauses (http://hl7.org/fhir/R4/search.html).

A clause is one parameter occurrence: repeated parameters are ANDed, comma-separated values
within one are ORed. Values are parsed by the parameter's type (values.py), so malformed values
(a bad date, an unknown prefix) fail with 400 before any SQL is built.

Chained (`subject:Patient.name`, search.html#chaining) and reverse-chained
(`_has:Observation:patient:code`, search.html#has) parameters become a `Chain` or `ReverseChain`
around the clause at their end. Each occurrence is evaluated on its own, so two chains through
the same reference may be met by different targets. Unlike an unknown plain parameter, a chain
the server cannot evaluate is a 400, never ignored: a dropped chain would widen the results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from fhirserver import errors
from fhirserver.registry import SearchParameterDefinition, r4
from fhirserver.search import fulltext, values

MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    # :in, :not-in, :below, :above need terminology; unsupported, they are reported, never guessed.
    "token": {"not", "text", "of-type", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "identifier"},  # plus :[Type]
    "uri": {"below", "above", "missing"},
    "composite": set(),
    "special": set(),
}
# Result parameters (search.html#return) and paging: not criteria.
CONTROL = frozenset(
    {
        "_count",
        "_cursor",
        "_before",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_include",
        "_revinclude",
        "_contained",
        "_containedType",
        "_format",
        "_pretty",
    }
)
MAX_CHAIN_LINKS = 4  # each `.` or `_has:` is one more nested subquery


@dataclass
class Clause:
    parameter: SearchParameterDefinition
    modifier: str | None
    values: list  # parsed values, ORed
    raw: str = ""


@dataclass
class Chain:
    """`reference[:Type].rest`: resources whose reference points at a target meeting `targets`.

    One criterion per candidate target type; a reference to any of them meeting its criterion
    qualifies."""

    parameter: SearchParameterDefinition
    targets: dict[str, Criterion]


@dataclass
class ReverseChain:
    """`_has:Source:reference:rest`: resources that some `source_type` resource meeting
    `criterion` points at through its `parameter`."""

    source_type: str
    parameter: SearchParameterDefinition
    criterion: Criterion


Criterion = Clause | Chain | ReverseChain


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Criterion] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # unknown or unsupported parameter names


@cache
def parameters_for(resource_type: str) -> dict[str, SearchParameterDefinition]:
    """Search parameters of a type: its own and those defined on Resource/DomainResource."""
    found = {}
    for sp in r4().search_parameters:
        if resource_type in sp.base or "Resource" in sp.base or "DomainResource" in sp.base:
            found.setdefault(sp.code, sp)
    return found


def parse(resource_type: str, pairs: list[tuple[str, str]], supported_types: frozenset[str]) -> SearchQuery:
    query = SearchQuery(resource_type)
    for name, raw in pairs:
        if name in CONTROL:
            continue
        if _is_reverse(name) or "." in name:
            query.clauses.append(_Chaining(name, raw, supported_types).criterion(resource_type, name, 0))
        elif clause := _clause(resource_type, name, raw, supported_types, name):
            query.clauses.append(clause)
        else:
            query.ignored.append(name)
    return query


def _clause(
    resource_type: str, name: str, raw: str, supported_types: frozenset[str], label: str
) -> Clause | None:
    """The clause of a plain parameter name, or None when it is unknown or unsupported."""
    code, _, modifier = name.partition(":")
    parameter = parameters_for(resource_type).get(code)
    if parameter is None or parameter.type not in supported_types or not _modifier_ok(parameter, modifier):
        return None
    if code in fulltext.FULL_TEXT:
        if not fulltext.indexed(resource_type):
            raise errors.bad_request(f"{label}: no full-text search over {resource_type} (encrypted data)")
        if modifier:
            return None
    elif parameter.expression is None and code != "_id":  # _query: not indexed
        return None
    return Clause(parameter, modifier or None, _values(parameter, modifier, raw, label), raw)


def _is_reverse(name: str) -> bool:
    return name == "_has" or name.startswith("_has:")


@dataclass(frozen=True)
class _Chaining:
    """Parses one chained or reverse-chained parameter, link by link; `name` is the whole
    parameter name, which every error names."""

    name: str
    raw: str
    supported_types: frozenset[str]

    def criterion(self, resource_type: str, name: str, links: int) -> Criterion:
        if _is_reverse(name):
            return self._reverse(resource_type, name, links + 1)
        if "." in name:
            return self._chain(resource_type, name, links + 1)
        clause = _clause(resource_type, name, self.raw, self.supported_types, self.name)
        if clause is None:
            raise self._error(f"'{name}' is not a supported search parameter or modifier of {resource_type}")
        return clause

    def _chain(self, resource_type: str, name: str, links: int) -> Chain:
        self._check_depth(links)
        head, _, rest = name.partition(".")
        code, _, type_modifier = head.partition(":")
        parameter = self._reference_parameter(resource_type, code)
        types = parameter.target
        if type_modifier:
            if type_modifier not in types:
                raise self._error(f"'{type_modifier}' is not a resource type that {code} can reference")
            types = (type_modifier,)
        # Without :Type, every target type that has the next parameter is searched (search.html#chaining).
        next_code = re.split(r"[.:]", rest, maxsplit=1)[0]
        candidates = [t for t in types if next_code in parameters_for(t)]
        if not candidates:
            raise self._error(f"no search parameter '{next_code}' on {' or '.join(types)} (through {code})")
        return Chain(parameter, {t: self.criterion(t, rest, links) for t in candidates})

    def _reverse(self, resource_type: str, name: str, links: int) -> ReverseChain:
        self._check_depth(links)
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts):
            raise self._error("_has takes the form _has:Type:reference:parameter")
        _, source_type, code, rest = parts
        if not r4().is_resource_type(source_type):
            raise self._error(f"'{source_type}' is not a resource type")
        parameter = self._reference_parameter(source_type, code)
        if resource_type not in parameter.target:
            raise self._error(f"{source_type}.{code} cannot reference {resource_type}")
        return ReverseChain(source_type, parameter, self.criterion(source_type, rest, links))

    def _reference_parameter(self, resource_type: str, code: str) -> SearchParameterDefinition:
        parameter = parameters_for(resource_type).get(code)
        if parameter is None:
            raise self._error(f"no search parameter '{code}' on {resource_type}")
        if parameter.type != "reference":
            raise self._error(f"{resource_type} '{code}' is a {parameter.type} parameter, not a reference")
        return parameter

    def _check_depth(self, links: int) -> None:
        if links > MAX_CHAIN_LINKS:
            raise self._error(f"more than {MAX_CHAIN_LINKS} chained links")

    def _error(self, detail: str) -> errors.FhirError:
        return errors.bad_request(f"Search parameter '{self.name}': {detail}")


def _modifier_ok(parameter: SearchParameterDefinition, modifier: str) -> bool:
    if not modifier:
        return True
    if parameter.type == "reference" and r4().is_resource_type(modifier):
        return True
    return modifier in MODIFIERS.get(parameter.type, set())


def _values(parameter: SearchParameterDefinition, modifier: str, raw: str, name: str) -> list:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise errors.bad_request(f"{name} must be true or false")
        return [raw == "true"]
    return values.parse(parameter, modifier, raw, name)
