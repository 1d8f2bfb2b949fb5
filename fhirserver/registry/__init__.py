"""The FHIR R4 (4.0.1) definitions the server runs on: resource types, their elements in
definition order, required value sets, search parameters and the five compartments (Patient,
Encounter, RelatedPerson, Practitioner, Device).

Loaded once from r4.json.gz, which scripts/build_r4_definitions.py compiles from the official
R4 definition bundles. Validation, XML, _summary/_elements, search indexing and the
CapabilityStatement all read this one registry, so they cannot disagree.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DEFINITIONS_FILE = Path(__file__).with_name("r4.json.gz")
FHIR_VERSION = "4.0.1"


@dataclass(frozen=True)
class ElementDefinition:
    name: str  # without [x]
    types: tuple[str, ...]  # type codes; a backbone element's code is its path
    min: int
    max: int | None  # None = unbounded
    summary: bool
    choice: bool
    value_set: str | None  # required binding with a known expansion

    @property
    def repeats(self) -> bool:
        return self.max is None or self.max > 1


@dataclass(frozen=True)
class TypeDefinition:
    name: str
    kind: str  # resource | complex-type | backbone | logical
    elements: tuple[ElementDefinition, ...]
    # JSON property name -> (element, type code); choice elements appear once per type
    # (valueQuantity, valueString, ...).
    properties: dict[str, tuple[ElementDefinition, str]] = field(repr=False)


@dataclass(frozen=True)
class SearchParameterDefinition:
    url: str
    code: str
    base: tuple[str, ...]
    type: str
    expression: str | None
    target: tuple[str, ...]
    multiple_or: bool
    multiple_and: bool
    comparator: tuple[str, ...]
    modifier: tuple[str, ...]
    chain: tuple[str, ...]
    component: tuple[dict, ...]


class Registry:
    def __init__(self, document: dict):
        self.fhir_version: str = document["fhirVersion"]
        self.resource_types: frozenset[str] = frozenset(document["resources"])
        self.primitive_types: frozenset[str] = frozenset(document["primitives"])
        self.value_sets: dict[str, frozenset[str]] = {
            url: frozenset(codes) for url, codes in document["valueSets"].items()
        }
        self.types: dict[str, TypeDefinition] = {
            name: _type_definition(name, raw) for name, raw in document["types"].items()
        }
        self.search_parameters: tuple[SearchParameterDefinition, ...] = tuple(
            _search_parameter(raw) for raw in document["searchParameters"]
        )
        self.search_parameters_by_url: dict[str, SearchParameterDefinition] = {
            sp.url: sp for sp in self.search_parameters
        }
        # compartment type -> resource type -> the reference parameters that make a member
        self.compartments: dict[str, dict[str, tuple[str, ...]]] = {
            compartment: {name: tuple(params) for name, params in members.items()}
            for compartment, members in document["compartments"].items()
        }
        self.patient_compartment: dict[str, tuple[str, ...]] = self.compartments["Patient"]

    def components(self, parameter: SearchParameterDefinition) -> tuple[SearchParameterDefinition, ...]:
        """The definitions of a composite's components, in the order of its values. R4 4.0.1's
        DocumentReference-relationship names them crosswise (`relatesto`, a reference, for
        `code`; `relation`, a token, for `target`): there the values' types decide."""
        found = tuple(self.search_parameters_by_url[c["definition"]] for c in parameter.component)
        if parameter.url.endswith("/DocumentReference-relationship"):
            return found[::-1]
        return found

    def is_resource_type(self, name: str) -> bool:
        return name in self.resource_types

    def type(self, name: str) -> TypeDefinition:
        return self.types[name]

    def is_primitive(self, type_code: str) -> bool:
        return type_code in self.primitive_types


def _type_definition(name: str, raw: dict) -> TypeDefinition:
    elements = tuple(
        ElementDefinition(
            name=e[0],
            types=tuple(e[1]),
            min=e[2],
            max=None if e[3] == "*" else int(e[3]),
            summary=e[4],
            choice=e[5],
            value_set=e[6],
        )
        for e in raw["elements"]
    )
    properties: dict[str, tuple[ElementDefinition, str]] = {}
    for element in elements:
        if element.choice:
            for code in element.types:
                properties[element.name + code[0].upper() + code[1:]] = (element, code)
        else:
            properties[element.name] = (element, element.types[0] if element.types else "")
    return TypeDefinition(name=name, kind=raw["kind"], elements=elements, properties=properties)


def _search_parameter(raw: dict) -> SearchParameterDefinition:
    return SearchParameterDefinition(
        url=raw["url"],
        code=raw["code"],
        base=tuple(raw["base"]),
        type=raw["type"],
        expression=raw["expression"],
        target=tuple(raw["target"]),
        multiple_or=raw["multipleOr"],
        multiple_and=raw["multipleAnd"],
        comparator=tuple(raw["comparator"]),
        modifier=tuple(raw["modifier"]),
        chain=tuple(raw["chain"]),
        component=tuple(raw.get("component", ())),
    )


@cache
def r4() -> Registry:
    """The R4 registry, loaded on first use and shared by the whole process."""
    with gzip.open(DEFINITIONS_FILE, "rb") as handle:
        return Registry(json.loads(handle.read()))
