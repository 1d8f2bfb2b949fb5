"""$meta, $meta-add and $meta-delete (http://hl7.org/fhir/R4/resource-operation-meta.html).

$meta-add and $meta-delete change the profiles, tags and security labels of the current
version in place: per R4 they do not create a new version.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.authorization import access
from fhirserver.api.negotiation import fhir_response, parse_body
from fhirserver.operations import parameters
from fhirserver.storage.repository import Repository, require_resource_type

SETS = ("profile", "tag", "security")


def meta(
    request: HttpRequest, resource_type: str | None = None, resource_id: str | None = None
) -> HttpResponse:
    repository = Repository()
    guard = access(request)
    if resource_id is not None:
        guard.require(resource_type, "read")
        current = repository.read_json(resource_type, resource_id)
        guard.check_instance(resource_type, resource_id, "read")
        return _parameters(request, current.get("meta", {}))
    # Type and system level summarise the resources in use: a search (SMART `s`) of them.
    if resource_type is not None:
        require_resource_type(resource_type)
        found = guard.require(resource_type, "search-type")
        reach = None if found is None else (found.sql, list(found.params))
    else:
        reach = guard.types_condition("search-system", "r.resource_type", "r.resource_id")
    return _parameters(request, repository.meta_in_use(resource_type, reach))


def meta_add(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    return _change(request, resource_type, resource_id, _added)


def meta_delete(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    return _change(request, resource_type, resource_id, _removed)


def _change(request: HttpRequest, resource_type: str, resource_id: str, combine) -> HttpResponse:
    body = parse_body(request)
    if not parameters.is_parameters(body):
        raise errors.bad_request("The body must be a Parameters resource with a 'meta' parameter")
    change = parameters.required(body, "meta", "valueMeta")
    if not isinstance(change, dict):
        raise errors.bad_request("Parameter 'meta' must be a Meta", code="structure")
    guard = access(request)
    guard.require(resource_type, "update")  # it changes the resource (in place, SMART `u`)
    with transaction.atomic():
        guard.check_instance(resource_type, resource_id, "update", writing=True)
        updated = Repository().change_meta(
            resource_type, resource_id, lambda current: combine(current, change)
        )
    return _parameters(request, updated)


def _identity(key: str, item: object) -> object:
    # Tags and security labels are identified by system+code; profiles by their URL.
    if key == "profile":
        return item
    return (item.get("system"), item.get("code")) if isinstance(item, dict) else item


def _added(current: dict, change: dict) -> dict:
    result = dict(current)
    for key in SETS:
        existing = list(current.get(key, []))
        known = {_identity(key, item) for item in existing}
        existing += [item for item in change.get(key, []) if _identity(key, item) not in known]
        if existing:
            result[key] = existing
    return result


def _removed(current: dict, change: dict) -> dict:
    result = dict(current)
    for key in SETS:
        gone = {_identity(key, item) for item in change.get(key, [])}
        kept = [item for item in current.get(key, []) if _identity(key, item) not in gone]
        if kept:
            result[key] = kept
        else:
            result.pop(key, None)
    return result


def _parameters(request: HttpRequest, value: dict) -> HttpResponse:
    return fhir_response(request, parameters.single("return", "valueMeta", value), shaped=False)
