"""$validate at type and instance level (http://hl7.org/fhir/R4/resource-operation-validate.html).

Runs exactly the validation the repository runs before storing, stores nothing, and answers
200 with an OperationOutcome listing the issues (an "all OK" information issue when none).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.negotiation import fhir_response, parse_body
from fhirserver.operation_outcome import outcome_from_issues
from fhirserver.operations import parameters
from fhirserver.storage.repository import Repository, check_valid, require_resource_type

MODES = ("create", "update", "delete")


def validate(request: HttpRequest, resource_type: str, resource_id: str | None = None) -> HttpResponse:
    require_resource_type(resource_type)
    body = parse_body(request)
    mode = None
    if parameters.is_parameters(body) and resource_type != "Parameters":
        mode = parameters.value(body, "mode", "valueCode")
        resource = parameters.value(body, "resource", "resource")
    else:
        resource = body
    if mode is not None and mode not in MODES:
        raise errors.bad_request(f"mode must be one of {', '.join(MODES)}")
    if mode == "delete":
        return _answer(request, _delete_issues(resource_type, resource_id))
    if resource is None:
        raise errors.bad_request("Nothing to validate: send a resource or a Parameters with 'resource'")
    return _answer(request, _issues(resource, resource_type, resource_id, mode))


def _issues(
    resource: dict, resource_type: str, resource_id: str | None, mode: str | None
) -> list[errors.Issue]:
    try:
        check_valid(resource, resource_type)
    except errors.FhirError as exc:
        return exc.issues
    if (mode == "update" or resource_id) and resource.get("id") != resource_id:
        return [
            errors.Issue("invalid", "The resource id must equal the id in the URL", f"{resource_type}.id")
        ]
    return []


def _delete_issues(resource_type: str, resource_id: str | None) -> list[errors.Issue]:
    if resource_id is None:
        return [errors.Issue("required", "mode=delete needs an instance ([type]/[id]/$validate)")]
    try:
        Repository().read(resource_type, resource_id)
    except errors.FhirError as exc:
        return exc.issues
    return []


def _answer(request: HttpRequest, issues: list[errors.Issue]) -> HttpResponse:
    if not issues:
        issues = [errors.Issue("informational", "All OK", severity="information")]
    return fhir_response(request, outcome_from_issues(issues), shaped=False)
