"""URL-level views: each picks the interaction for the HTTP method (one module per
interaction, as in Blaze) and runs it as a FHIR endpoint."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from bulk import views as bulk
from fhirserver import errors
from fhirserver.api import (
    audit_events,
    capabilities,
    create,
    delete,
    history,
    patch,
    read,
    search,
    transaction,
    update,
)
from fhirserver.api.endpoint import fhir_endpoint
from fhirserver.operations import everything, meta, validate
from sync import views as sync_views


def _not_allowed(request: HttpRequest) -> errors.FhirError:
    return errors.FhirError.single(405, "not-supported", f"{request.method} is not allowed here")


@fhir_endpoint
def base(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return transaction.bundle(request)
    if request.method == "GET":
        return search.system_search(request, list(_pairs(request.GET)))
    raise _not_allowed(request)


@fhir_endpoint
def metadata(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        raise _not_allowed(request)
    return capabilities.capabilities(request)


@fhir_endpoint
def system_history(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        raise _not_allowed(request)
    return history.history_response(request)


@fhir_endpoint
def type_level(request: HttpRequest, resource_type: str) -> HttpResponse:
    if resource_type == audit_events.RESOURCE_TYPE:
        if request.method != "GET":
            raise audit_events.not_allowed(request)
        return audit_events.search(request, list(_pairs(request.GET)))
    if request.method == "GET":
        return search.search(request, resource_type, list(_pairs(request.GET)))
    if request.method == "POST":
        return create.create(request, resource_type)
    if request.method == "PUT":
        return update.conditional_update(request, resource_type)
    if request.method == "DELETE":
        return delete.conditional_delete(request, resource_type)
    raise _not_allowed(request)


@fhir_endpoint
def type_search(request: HttpRequest, resource_type: str) -> HttpResponse:
    if request.method != "POST":
        raise _not_allowed(request)
    pairs = list(_pairs(request.GET)) + list(_pairs(request.POST))
    if resource_type == audit_events.RESOURCE_TYPE:
        return audit_events.search(request, pairs)
    return search.search(request, resource_type, pairs)


@fhir_endpoint
def compartment(request: HttpRequest, resource_type: str, resource_id: str, target_type: str) -> HttpResponse:
    if request.method != "GET":
        raise _not_allowed(request)
    return search.compartment_search(
        request, resource_type, resource_id, target_type, list(_pairs(request.GET))
    )


@fhir_endpoint
def type_history(request: HttpRequest, resource_type: str) -> HttpResponse:
    if request.method != "GET":
        raise _not_allowed(request)
    return history.history_response(request, resource_type)


@fhir_endpoint
def instance(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    if resource_type == audit_events.RESOURCE_TYPE:
        return audit_events.read(request, resource_id)
    if request.method in ("GET", "HEAD"):
        return read.read(request, resource_type, resource_id)
    if request.method == "PUT":
        return update.update(request, resource_type, resource_id)
    if request.method == "PATCH":
        return patch.patch(request, resource_type, resource_id)
    if request.method == "DELETE":
        return delete.delete(request, resource_type, resource_id)
    raise _not_allowed(request)


@fhir_endpoint
def instance_history(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    if request.method != "GET":
        raise _not_allowed(request)
    return history.history_response(request, resource_type, resource_id)


@fhir_endpoint
def version(request: HttpRequest, resource_type: str, resource_id: str, version_id: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        raise _not_allowed(request)
    return read.vread(request, resource_type, resource_id, version_id)


OPERATIONS = {
    # name: (HTTP methods, handler)
    "validate": (("POST",), validate.validate),
    "meta": (("GET", "POST"), meta.meta),
    "meta-add": (("POST",), meta.meta_add),
    "meta-delete": (("POST",), meta.meta_delete),
    "everything": (("GET", "POST"), everything.everything),
}


@fhir_endpoint
def operation(
    request: HttpRequest, name: str, resource_type: str | None = None, resource_id: str | None = None
) -> HttpResponse:
    methods, handler = OPERATIONS[name]
    if request.method not in methods:
        raise _not_allowed(request)
    kwargs = {"resource_type": resource_type} if resource_type else {}
    if resource_id:
        kwargs["resource_id"] = resource_id
    return handler(request, **kwargs)


@fhir_endpoint
def export(
    request: HttpRequest, name: str, resource_type: str | None = None, resource_id: str | None = None
) -> HttpResponse:
    """Bulk Data kick-off: `name` is the operation (for the audit trail), the type and id give
    the level (system, Patient, Group/[id])."""
    level = {None: "system", "Patient": "patient", "Group": "group"}[resource_type]
    return bulk.kickoff(request, level, resource_id)


@fhir_endpoint
def export_status(request: HttpRequest, export_id: str) -> HttpResponse:
    return bulk.status(request, export_id)


@fhir_endpoint
def export_file(request: HttpRequest, export_id: str, file_name: str) -> HttpResponse:
    return bulk.download(request, export_id, file_name)


@fhir_endpoint
def sync_snapshots(request: HttpRequest) -> HttpResponse:
    return sync_views.listing(request)


@fhir_endpoint
def sync_snapshot(request: HttpRequest, name: str) -> HttpResponse:
    """`name` is the operation, for the audit trail (serving a snapshot reads patient data)."""
    return sync_views.bundle(request)


def _pairs(query_dict) -> list[tuple[str, str]]:
    return [(key, value) for key, values in query_dict.lists() for value in values]
