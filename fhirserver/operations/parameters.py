"""Reading and writing Parameters resources (http://hl7.org/fhir/R4/parameters.html)."""

from __future__ import annotations

from fhirserver import errors


def is_parameters(body: dict) -> bool:
    return body.get("resourceType") == "Parameters"


def value(body: dict, name: str, value_key: str) -> object | None:
    """The `value_key` (e.g. valueMeta, resource) of the parameter `name`, if present."""
    for parameter in body.get("parameter", []):
        if isinstance(parameter, dict) and parameter.get("name") == name:
            return parameter.get(value_key)
    return None


def required(body: dict, name: str, value_key: str) -> object:
    found = value(body, name, value_key)
    if found is None:
        raise errors.bad_request(f"Parameter '{name}' ({value_key}) is required", code="required")
    return found


def single(name: str, value_key: str, content: object) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": name, value_key: content}]}
