"""FHIR OperationOutcome bodies for errors (http://hl7.org/fhir/R4/operationoutcome.html).

Dependency-free on purpose: middleware outside the FHIR API (tenant resolution, auth) answers
with the same body the API does.
"""

from __future__ import annotations

import orjson
from django.http import HttpResponse

FHIR_JSON = "application/fhir+json"


def operation_outcome(
    code: str, diagnostics: str, severity: str = "error", expression: list[str] | None = None
) -> dict:
    """One issue. `code` is from http://hl7.org/fhir/R4/valueset-issue-type.html."""
    issue: dict = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_from_issues(issues) -> dict:
    """An OperationOutcome of several issues (objects with code, diagnostics, expression, severity)."""
    rendered = []
    for issue in issues:
        entry = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
        if issue.expression:
            entry["expression"] = [issue.expression]
        rendered.append(entry)
    return {"resourceType": "OperationOutcome", "issue": rendered}


def outcome_response(status: int, code: str, diagnostics: str, **kwargs) -> HttpResponse:
    body = orjson.dumps(operation_outcome(code, diagnostics, **kwargs))
    return HttpResponse(body, status=status, content_type=FHIR_JSON)
