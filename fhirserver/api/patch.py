"""patch with JSON Patch (RFC 6902; http://hl7.org/fhir/R4/http.html#patch)."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.authorization import access
from fhirserver.api.endpoint import if_match_version, stored_response
from fhirserver.storage.patching import JSON_PATCH, apply_json_patch, parse_json_patch
from fhirserver.storage.repository import Repository


def patch(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    guard = access(request)
    guard.require(resource_type, "patch")
    if (request.content_type or "").lower() != JSON_PATCH:
        raise errors.FhirError.single(415, "not-supported", f"PATCH needs Content-Type {JSON_PATCH}")
    operations = parse_json_patch(request.body)
    with transaction.atomic():
        guard.check_instance(resource_type, resource_id, "patch", writing=True)
        stored = apply_json_patch(
            Repository(), resource_type, resource_id, operations, if_match_version(request)
        )
        guard.check_instance(resource_type, resource_id, "patch", writing=True)
    return stored_response(request, stored)
