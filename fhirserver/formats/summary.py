"""_summary and _elements: returning a subset of each resource (R4 search.html#summary, #elements).

Which elements survive comes from the base definitions in the registry (ElementDefinition.isSummary
and min), so the subset matches the specification without per-resource code. The per-type sets are
computed once and cached because these functions run on every resource of a search page.

Results share unchanged sub-objects with the input: nothing here mutates the input, and callers
serialize the result without mutating it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhirserver.registry import r4

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

# Kept on every resource in every mode: they identify the resource and carry its version and tags.
ALWAYS = frozenset({"resourceType", "id", "meta"})

# Types kept whole once their element is kept:
# - Resource: nested resources (Bundle.entry.resource) are returned as they are; _summary applies
#   to the resources a response returns, not recursively to the resources inside them.
# - Extension: url and value only mean something together (ext-1); its value[x] is not summary.
# - Meta: always kept whole, with versionId, lastUpdated, tags and security labels.
WHOLE_TYPES = frozenset({"Resource", "Extension", "Meta"})


def summarize(resource: dict, mode: str) -> dict:
    """The resource as `_summary=<mode>` returns it; "count" is the search's business, not ours.

    "false" returns the input object itself, unchanged.
    """
    if mode == "false":
        return resource
    if mode == "true":
        shaped = _summary_of(resource, resource["resourceType"])
    elif mode == "text":
        keep = _mandatory_names(resource["resourceType"]) | {"text"}
        shaped = {key: value for key, value in resource.items() if key.lstrip("_") in keep}
    elif mode == "data":
        shaped = {key: value for key, value in resource.items() if key != "text"}
    else:
        raise ValueError(f"unknown _summary mode {mode!r}")
    return _marked(resource, shaped)


def select_elements(resource: dict, elements: list[str]) -> dict:
    """The resource as `_elements=<elements>` returns it (search.html#elements).

    Names are top-level element names; a choice name ("value") selects whichever valueX is present.
    Unknown names are ignored. Mandatory elements are kept too: "Servers SHOULD always return
    mandatory elements whether they are requested or not."
    """
    wanted = {name.strip() for name in elements}
    resource_type = resource["resourceType"]
    keep = _mandatory_names(resource_type)
    element_names = _element_names(resource_type)
    shaped = {
        key: value
        for key, value in resource.items()
        if key.lstrip("_") in keep or element_names.get(key.lstrip("_")) in wanted
    }
    return _marked(resource, shaped)


def _summary_of(node: dict, type_name: str) -> dict:
    """`node` (a resource, datatype or backbone element value) cut down to its summary elements.

    A primitive's extension companion `_x` follows `x`.
    """
    keep = _summary_names(type_name)
    properties = r4().type(type_name).properties
    return {
        key: value
        if key.startswith("_") or key == "resourceType"
        else _summary_value(value, properties[key][1])
        for key, value in node.items()
        if key.lstrip("_") in keep
    }


def _summary_value(value: Any, type_code: str) -> Any:
    if type_code in WHOLE_TYPES or r4().is_primitive(type_code):
        return value
    if isinstance(value, list):
        return [_summary_of(item, type_code) for item in value]
    return _summary_of(value, type_code)


@cache
def _summary_names(type_name: str) -> frozenset[str]:
    """JSON property names _summary=true keeps for a type.

    search.html#summary asks for the elements marked summary. Mandatory elements are kept as well,
    as _elements does: some are not marked (AuditEvent.agent, Claim.item.sequence), and dropping
    them would return elements that break their own cardinality.
    """
    definition = r4().type(type_name)
    names = {name for name, (element, _) in definition.properties.items() if element.summary or element.min}
    if definition.kind == "resource":
        names |= ALWAYS
    return frozenset(names)


@cache
def _mandatory_names(resource_type: str) -> frozenset[str]:
    """Top-level properties that _summary=text and _elements keep whatever was asked for."""
    properties = r4().type(resource_type).properties
    return frozenset(name for name, (element, _) in properties.items() if element.min) | ALWAYS


@cache
def _element_names(resource_type: str) -> dict[str, str]:
    """JSON property name -> element name, so "valueQuantity" answers to "value"."""
    return {name: element.name for name, (element, _) in r4().type(resource_type).properties.items()}


def _marked(original: dict, shaped: dict) -> dict:
    """`shaped`, tagged SUBSETTED if anything was removed from `original`.

    The tag stops a client from writing the partial resource back over the full one. Equality is
    cheap here: kept sub-objects are the input's own, and comparison short-cuts on identity.
    """
    if shaped == original:
        return shaped
    meta = dict(shaped.get("meta", {}))
    tags = meta.get("tag", [])
    if not any(tag.get("system") == SUBSETTED["system"] and tag.get("code") == "SUBSETTED" for tag in tags):
        meta["tag"] = [*tags, dict(SUBSETTED)]
    head = {key: shaped[key] for key in ("resourceType", "id") if key in shaped}
    return head | {"meta": meta} | {key: value for key, value in shaped.items() if key != "meta"}
