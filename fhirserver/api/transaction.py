"""POST [base] with a batch or transaction Bundle (http://hl7.org/fhir/R4/http.html#transaction)."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from audit import notes
from fhirserver import errors
from fhirserver.api.authorization import access
from fhirserver.api.bundles import Entry, bundle_response
from fhirserver.api.negotiation import parse_body
from fhirserver.storage import statistics
from fhirserver.storage.bundles import process_batch, process_transaction


def bundle(request: HttpRequest) -> HttpResponse:
    body = parse_body(request)
    if body.get("resourceType") != "Bundle":
        raise errors.bad_request("POST to the base takes a Bundle", expression="resourceType")
    kind = body.get("type")
    guard = access(request)
    if kind == "transaction":
        with transaction.atomic():
            results = process_transaction(body, guard)
    elif kind == "batch":
        results = process_batch(body, guard)
    else:
        raise errors.bad_request("Bundle.type must be batch or transaction", expression="Bundle.type")
    notes.touched(request, kind, [result.stored.location for result in results if result.stored is not None])
    if len(results) >= statistics.BULK:
        statistics.refresh_tenant_statistics()
    entries = [
        Entry(resource=_resource_of(result, request), fields={"response": result.response()})
        for result in results
    ]
    return bundle_response(request, f"{kind}-response", entries)


def _resource_of(result, request: HttpRequest) -> str | None:
    """The stored resource, unless the client prefers minimal answers."""
    if result.stored is None or "return=minimal" in request.headers.get("Prefer", ""):
        return None
    return result.stored.content
