"""$validate at type and instance level (http://hl7.org/fhir/R4/resource-operation-validate.html).

Runs exactly the validation the repository runs before storing, stores nothing, and answers
200 with an OperationOutcome listing the issues (an "all OK" information issue when none).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.api.authorization import access
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
    _authorize(request, resource_type, resource_id, mode)
    if mode == "delete":
        return _answer(request, _delete_issues(resource_type, resource_id))
    if resource is None:
        raise errors.bad_request("Nothing to validate: send a resource or a Parameters with 'resource'")
    return _answer(request, _issues(resource, resource_type, resource_id, mode))


def _authorize(request: HttpRequest, resource_type: str, resource_id: str | None, mode: str | None) -> None:
    """$validate stores nothing, but says whether the interaction it validates would pass, so it
    needs that interaction's scope; without a mode, any scope on the type. Only mode=delete
    looks at a stored resource, which must then be within reach."""
    guard = access(request)
    if mode is None:
        if not any(
            guard.scopes.allows(resource_type, i)
            for i in ("create", "read", "update", "delete", "search-type")
        ):
            raise errors.forbidden(f"The access token grants nothing on {resource_type}")
        return
    guard.require(resource_type, mode)
    if mode == "delete" and resource_id is not None:
        guard.check_instance(resource_type, resource_id, "delete")


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
