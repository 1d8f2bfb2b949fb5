"""create, plain and conditional (If-None-Exist) (http://hl7.org/fhir/R4/http.html#create)."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.authorization import access
from fhirserver.api.endpoint import stored_response
from fhirserver.api.negotiation import parse_body
from fhirserver.storage.repository import Repository, require_resource_type


def create(request: HttpRequest, resource_type: str) -> HttpResponse:
    require_resource_type(resource_type)
    guard = access(request)
    guard.require(resource_type, "create")
    resource = parse_body(request)
    if resource.get("resourceType") != resource_type:
        raise errors.bad_request(
            f"The body is a {resource.get('resourceType')!s}, the URL says {resource_type}",
            expression="resourceType",
        )
    repository = Repository()
    with transaction.atomic():
        condition = request.headers.get("If-None-Exist")
        if condition:
            existing = repository.matching_ids(resource_type, condition.lstrip("?"))
            if len(existing) > 1:
                raise errors.precondition_failed(f"If-None-Exist matched {len(existing)} resources")
            if existing:
                resource_id = existing.pop()
                guard.check_instance(resource_type, resource_id, "create")
                return stored_response(request, repository.read(resource_type, resource_id), status=200)
        stored = repository.create(resource)
        # What was written must be within reach (a patient's compartment, a restriction): checked
        # on the stored index, and rolled back with the transaction when it is not.
        guard.check_instance(resource_type, stored.resource_id, "create", writing=True)
    return stored_response(request, stored, status=201)
