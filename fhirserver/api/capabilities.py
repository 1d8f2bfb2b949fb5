"""The CapabilityStatement (GET [base]/metadata), generated from the registry and from what the
server implements, never from a static file that could drift (http://hl7.org/fhir/R4/capabilitystatement.html)."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from fhirserver.api.endpoint import base_url
from fhirserver.api.negotiation import fhir_response
from fhirserver.registry import r4
from fhirserver.search import fulltext
from fhirserver.search.query import parameters_for
from fhirserver.search.sql import SUPPORTED_TYPES
from smart_auth.advertised import advertised

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
OPERATIONS = ("validate", "meta", "meta-add", "meta-delete", "everything")
# The type an operation's OperationDefinition is defined on, when it is not Resource.
OPERATION_TYPES = {"everything": "Patient"}
# Bulk Data IG 2.0 (bulk/): the system-level export, and the Patient and Group ones per type.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
BULK_EXPORT = {"Patient": "patient-export", "Group": "group-export"}


def capabilities(request: HttpRequest) -> HttpResponse:
    cached = _statement()
    statement = {
        **cached,
        "implementation": {"description": request.tenant.name, "url": base_url(request)},
        "rest": [{**cached["rest"][0], "security": _security(request)}],
    }
    return fhir_response(request, statement)


def _security(request: HttpRequest) -> dict:
    """SMART on FHIR security: the service code and the `oauth-uris` extension
    (SMART App Launch 1.0 "Declaring support for OAuth2 endpoints", still read by clients)."""
    urls = advertised(request)
    names = {
        "authorize": "authorization_endpoint",
        "token": "token_endpoint",
        "introspect": "introspection_endpoint",
        "revoke": "revocation_endpoint",
    }
    uris = {short: urls[name] for short, name in names.items() if name in urls}
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": name, "valueUri": uri} for name, uri in uris.items()],
            }
        ],
    }


@cache
def _statement() -> dict:
    registry = r4()
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": settings.FHIR_SERVER_RELEASE_DATE,
        "kind": "instance",
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "software": {"name": "fhirserver", "version": settings.FHIR_SERVER_VERSION},
        "fhirVersion": registry.fhir_version,
        "format": ["json", "xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": [_resource(name) for name in sorted(registry.resource_types)],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "operation": [
                    {
                        "name": name,
                        "definition": "http://hl7.org/fhir/OperationDefinition/"
                        f"{OPERATION_TYPES.get(name, 'Resource')}-{name}",
                    }
                    for name in OPERATIONS
                ]
                + [{"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"}],
            }
        ],
    }


def _resource(resource_type: str) -> dict:
    described = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple",
        "searchParam": _search_params(resource_type),
    }
    if resource_type in BULK_EXPORT:
        definition = f"{BULK_DATA}/OperationDefinition/{BULK_EXPORT[resource_type]}"
        described["operation"] = [{"name": "export", "definition": definition}]
    return described


def _search_params(resource_type: str) -> list[dict]:
    """The parameters search evaluates: those of an indexed type with an expression, _id, and
    full text on the types without encrypted elements."""
    text = fulltext.FULL_TEXT if fulltext.indexed(resource_type) else frozenset()
    return [
        {"name": code, "definition": sp.url, "type": sp.type}
        for code, sp in sorted(parameters_for(resource_type).items())
        if sp.type in SUPPORTED_TYPES and (sp.expression or code == "_id" or code in text)
    ]
