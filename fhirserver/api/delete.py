"""delete, plain and conditional (http://hl7.org/fhir/R4/http.html#delete): soft and versioned,
so a read afterwards gives 410 Gone and the history keeps every version."""

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.authorization import access
from fhirserver.api.endpoint import if_match_version
from fhirserver.storage.repository import Repository, require_resource_type


def delete(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    guard = access(request)
    guard.require(resource_type, "delete")
    with transaction.atomic():
        guard.check_instance(resource_type, resource_id, "delete", writing=True)
        stored = Repository().delete(resource_type, resource_id, if_match_version(request))
    response = HttpResponse(status=204)
    if stored is not None:
        response["ETag"] = stored.etag
    return response


def conditional_delete(request: HttpRequest, resource_type: str) -> HttpResponse:
    """DELETE [type]?criteria: deletes every match, up to FHIR_CONDITIONAL_DELETE_MAX."""
    require_resource_type(resource_type)
    guard = access(request)
    guard.require(resource_type, "delete")
    repository = Repository()
    with transaction.atomic():
        matches = repository.matching_ids(resource_type, request.META.get("QUERY_STRING", ""))
        if len(matches) > settings.FHIR_CONDITIONAL_DELETE_MAX:
            raise errors.precondition_failed(
                f"The criteria matched {len(matches)} resources; at most "
                f"{settings.FHIR_CONDITIONAL_DELETE_MAX} may be deleted at once"
            )
        for resource_id in sorted(matches):
            # Every match must be deletable: a match out of reach refuses the whole request
            # rather than being skipped, which would report a deletion that did not happen.
            guard.check_instance(resource_type, resource_id, "delete", writing=True)
            repository.delete(resource_type, resource_id)
    return HttpResponse(status=204)
