"""Break-glass: a clinician holding the `break-glass` role reaches records outside their normal
access by sending `X-Break-Glass: <reason>`; every such request is recorded for review.

"Normal access" is the token's scopes. Breaking the glass lifts what limits *which records* they
reach, never *what they may do*: each resource scope becomes the user-level scope of the same
type and permissions, so `patient/Observation.rs?category=laboratory` reads every Observation,
and a token without Observation scopes still reads none. The role comes from the access token's
`role` claim (UserProfile.role, roles separated by spaces); administrators have every role.

A reason is required (400 without one), the role too (403). The request is recorded in
BreakGlassAccess (tenant admin) before it runs, and `request.break_glass_reason` is left for the
AuditEvent writer. The reason is never logged: it may describe the patient.
"""

from __future__ import annotations

import dataclasses

from django.http import HttpRequest, HttpResponse

from fhirserver import errors
from fhirserver.operation_outcome import outcome_response
from smart_auth.context import AuthContext
from smart_auth.models import BreakGlassAccess
from smart_auth.scopes import PERMISSIONS, InvalidScope, ResourceScope, parse_scope, require_role

HEADER = "X-Break-Glass"
ROLE = "break-glass"
MAX_REASON = 1000


class BreakGlassMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = request.headers.get(HEADER)
        context = getattr(request, "auth_context", None)
        if header is None or context is None:
            return self.get_response(request)
        reason = header.strip()
        if not reason or len(reason) > MAX_REASON:
            return outcome_response(
                400, "required", f"{HEADER} needs a reason (1 to {MAX_REASON} characters)"
            )
        try:
            require_role(context, ROLE)
        except errors.FhirError as refused:
            return outcome_response(refused.status, "forbidden", f"{HEADER} needs the {ROLE} role")
        record(request, context, reason)
        request.auth_context = widened(context)
        request.break_glass_reason = reason
        return self.get_response(request)


def widened(context: AuthContext) -> AuthContext:
    """The context with every resource scope lifted to user level, unrestricted, marked as
    broken glass (access.policy lifts ABAC rules and security labels for it)."""
    return dataclasses.replace(
        context, scopes=frozenset(_lifted(scope) for scope in context.scopes), break_glass=True
    )


def _lifted(text: str) -> str:
    try:
        scope = parse_scope(text)
    except InvalidScope:
        return text  # grants nothing before or after
    if not isinstance(scope, ResourceScope):
        return text
    permissions = "".join(letter for letter in PERMISSIONS if letter in scope.permissions)
    return f"user/{scope.resource_type}.{permissions}"


def record(request: HttpRequest, context: AuthContext, reason: str) -> None:
    BreakGlassAccess.objects.create(
        user=context.user or "",
        client_id=context.client_id or "",
        reason=reason,
        method=request.method,
        path=request.path,
        request_id=getattr(request, "request_id", ""),
    )
