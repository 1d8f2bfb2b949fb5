"""read and vread (http://hl7.org/fhir/R4/http.html#read): stored JSON served as stored."""

from django.http import HttpRequest, HttpResponse

from fhirserver.api.authorization import access
from fhirserver.api.endpoint import not_modified, not_modified_response, with_version_headers
from fhirserver.api.negotiation import fhir_response
from fhirserver.storage.repository import Repository


def read(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    guard = access(request)
    guard.require(resource_type, "read")
    stored = Repository().read(resource_type, resource_id)
    guard.check_instance(resource_type, resource_id, "read")
    if not_modified(request, stored):
        return not_modified_response(stored)
    return with_version_headers(fhir_response(request, stored.content), stored)


def vread(request: HttpRequest, resource_type: str, resource_id: str, version_id: str) -> HttpResponse:
    guard = access(request)
    guard.require(resource_type, "vread")
    stored = Repository().vread(resource_type, resource_id, version_id)
    guard.check_instance(resource_type, resource_id, "vread")
    return with_version_headers(fhir_response(request, stored.content), stored)
