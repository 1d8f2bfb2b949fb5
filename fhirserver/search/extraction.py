"""Search index rows of a stored resource: one typed row per value of every R4 search
parameter that applies to its type (http://hl7.org/fhir/R4/search.html#ptypes).

Each parameter's expression is compiled once per resource type (expressions.py); the values it
yields are turned into rows by their FHIR type, following the per-type rules of search.html.
Composite parameters (search.html#composite) and the special `near` (Location.position) are
indexed as groups: each occurrence of the base element gives one row per component value in the
component's own type's table, under the parameter `code#<component index>`, all with the same
group number in the `composite` column, so a search can require every component to match within
one occurrence. Parameters without an expression (`_text`, `_content`, `_query`) are not
indexed. Values a parameter type has no rule for (a date parameter reaching
`Procedure.performedString`, a quantity reaching SampledData) add no rows. A reference's
`identifier` is indexed as a token under `code:identifier`, for that modifier.
"""

from __future__ import annotations

from functools import cache

from fhirserver.registry import r4
from fhirserver.search import fulltext
from fhirserver.search.expressions import Evaluate, applies_to, compile_expression, compile_relative
from fhirserver.search.index_values import CONVERTERS, VALUE_KINDS, Converter, IndexRows

Entry = tuple[str, Evaluate, dict[str, Converter]]  # (parameter code, expression, converters)


def extract(resource: dict) -> IndexRows:
    """The index rows of `resource`, without duplicates."""
    rows = IndexRows()
    resource_type = resource["resourceType"]
    context = [(resource, resource_type)]
    entries, by_key, always = _plan(resource_type)
    # Only parameters reading a property the resource has can yield values: most cannot.
    selected = set(always)
    for key in resource:
        selected.update(by_key.get(key, ()))
    for index in selected:
        code, evaluate, converters = entries[index]
        for value, fhir_type in evaluate(context):
            convert = converters.get(fhir_type)
            if convert is not None:
                convert(code, value, rows)
    for base, components in _composites(resource_type):
        for occurrence in base(context):
            _add_group(context, occurrence, components, rows)
    rows.texts = fulltext.documents(resource)
    rows.deduplicate()
    return rows


Component = tuple[str, Evaluate, dict[str, Converter], bool]  # (param, expression, converters, from root)
# Observation's combo-* composites (base `Observation | Observation.component`) are the union of
# the plain and the component-* ones, component for component: they get no rows of their own,
# and a search reads both (composite.py); their rows would double those of the other two.
COMBINED = {
    "combo-code-value-quantity": ("code-value-quantity", "component-code-value-quantity"),
    "combo-code-value-concept": ("code-value-concept", "component-code-value-concept"),
}
# Special parameters indexed as groups of number components (search.html#special: near).
_SPECIAL_COMPONENTS = {"near": (("latitude", "number"), ("longitude", "number"))}


def _add_group(context: list, occurrence: tuple, components: tuple[Component, ...], rows: IndexRows) -> None:
    """One occurrence's component rows, all under one group number; none unless every
    component has a value, since a composite matches only when all of its components do."""
    group = IndexRows()
    for param, evaluate, converters, from_root in components:
        before = group.count()
        for value, fhir_type in evaluate(context if from_root else [occurrence]):
            convert = converters.get(fhir_type)
            if convert is not None:
                convert(param, value, group)
        if group.count() == before:
            return
    number = len(rows.components)  # unique within the resource: each group adds rows
    rows.components += [(kind, number, row) for kind in VALUE_KINDS for row in getattr(group, kind)]


@cache
def _composites(resource_type: str) -> tuple[tuple[Evaluate, tuple[Component, ...]], ...]:
    """(base expression, components) of the type's composite parameters and of `near`.
    Component expressions are relative to the base element, except `%resource.` ones
    (MolecularSequence), which read the resource."""
    found = []
    for parameter in r4().search_parameters:
        if parameter.type not in ("composite", "special") or parameter.expression is None:
            continue
        if parameter.code in COMBINED:
            continue
        if not any(applies_to(base, resource_type) for base in parameter.base):
            continue
        base = compile_expression(parameter.expression, resource_type)
        if parameter.type == "composite":
            definitions = r4().components(parameter)
            parts = [(c["expression"], d.type) for c, d in zip(parameter.component, definitions, strict=True)]
        else:
            parts = list(_SPECIAL_COMPONENTS[parameter.code])
        components = []
        for index, (expression, kind) in enumerate(parts):
            if expression.startswith("%resource."):
                evaluate = compile_expression(expression.removeprefix("%resource."), resource_type).evaluate
            else:
                evaluate = compile_relative(expression, base.types)[0]
            components.append(
                (f"{parameter.code}#{index}", evaluate, CONVERTERS[kind], expression.startswith("%"))
            )
        found.append((base.evaluate, tuple(components)))
    return tuple(found)


@cache
def _plan(resource_type: str) -> tuple[tuple[Entry, ...], dict[str, tuple[int, ...]], tuple[int, ...]]:
    """The parameters of `resource_type`, the ones each top-level property can feed, and the
    ones to evaluate whatever properties are present."""
    if resource_type not in r4().resource_types:
        raise ValueError(f"{resource_type!r} is not an R4 resource type")
    entries: list[Entry] = []
    by_key: dict[str, list[int]] = {}
    always: list[int] = []
    for parameter in r4().search_parameters:
        converters = CONVERTERS.get(parameter.type)
        if converters is None or parameter.expression is None:
            continue
        if not any(applies_to(base, resource_type) for base in parameter.base):
            continue
        expression = compile_expression(parameter.expression, resource_type)
        if expression.types:
            for key in expression.keys if expression.keys is not None else ():
                by_key.setdefault(key, []).append(len(entries))
            if expression.keys is None:
                always.append(len(entries))
            entries.append((parameter.code, expression.evaluate, converters))
    return tuple(entries), {key: tuple(found) for key, found in by_key.items()}, tuple(always)
