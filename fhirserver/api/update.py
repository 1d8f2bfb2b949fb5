"""update, plain and conditional (http://hl7.org/fhir/R4/http.html#update, #cond-update)."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.authorization import access
from fhirserver.api.endpoint import if_match_version, stored_response
from fhirserver.api.negotiation import parse_body
from fhirserver.storage.repository import Repository, new_id, require_resource_type


def update(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    guard = access(request)
    guard.require(resource_type, "update")
    resource = parse_body(request)
    with transaction.atomic():
        # Both the version replaced and the one written must be within reach (SMART `u`).
        guard.check_instance(resource_type, resource_id, "update", writing=True)
        stored, created = Repository().update(resource_type, resource_id, resource, if_match_version(request))
        guard.check_instance(resource_type, resource_id, "update", writing=True)
    return stored_response(request, stored, status=201 if created else 200)


def conditional_update(request: HttpRequest, resource_type: str) -> HttpResponse:
    """PUT [type]?criteria: no match creates, one match updates it, several is 412."""
    require_resource_type(resource_type)
    guard = access(request)
    guard.require(resource_type, "update")
    resource = parse_body(request)
    repository = Repository()
    with transaction.atomic():
        matches = repository.matching_ids(resource_type, request.META.get("QUERY_STRING", ""))
        if len(matches) > 1:
            raise errors.precondition_failed(f"The criteria matched {len(matches)} resources")
        if matches:
            resource_id = matches.pop()
            if resource.get("id") not in (None, resource_id):
                raise errors.bad_request("The body's id is not the id of the matching resource")
        else:
            resource_id = resource.get("id") or new_id()
        guard.check_instance(resource_type, resource_id, "update", writing=True)
        stored, created = repository.update(
            resource_type, resource_id, {**resource, "id": resource_id}, if_match_version(request)
        )
        guard.check_instance(resource_type, resource_id, "update", writing=True)
    return stored_response(request, stored, status=201 if created else 200)
