"""Recording one request in the audit trail: the facts gathered from the request, its routing
and its response, made into an AuditEvent and appended to the tenant's chain."""

from __future__ import annotations

import dataclasses

from django.http import HttpRequest, HttpResponse

from audit import chain, events, interactions, patients
from audit.interactions import Interaction
from fhirserver.storage.repository import now
from smart_auth.context import AuthContext

BREAK_GLASS_HEADER = "X-Break-Glass"
_MAX_REASON = 1000


def record(request: HttpRequest, response: HttpResponse, known_patients: set[str] = frozenset()) -> None:
    """Append the request's AuditEvent (nothing for requests that touch no patient data)."""
    interaction = interactions.of(request)
    if interaction is None:
        return
    subtype = getattr(request, "audit_subtype", None)
    if subtype is not None:
        interaction = dataclasses.replace(interaction, subtype=subtype)
    query = getattr(request, "audit_query", None)  # what a request reached when its URL does not say
    if query is not None:
        interaction = dataclasses.replace(interaction, query=query)
    references = _references(request, response, interaction)
    facts = _facts(request, response.status_code, interaction)
    facts = dataclasses.replace(
        facts, references=references, patients=_patients(request, interaction, references) | known_patients
    )
    _append(facts)


def record_job(
    tenant: str,
    interaction: Interaction,
    context: AuthContext,
    patients: set[str],
    references: list[str],
    job: str,
) -> None:
    """What a background job did to patient data (a sync import), inside its transaction: no
    request, so no address, and the job's id stands for the request id."""
    facts = events.Facts(
        tenant=tenant, status=200, interaction=interaction, context=context, source_ip="",
        request_id=job, patients=patients, references=references, recorded=now(),
    )  # fmt: skip
    _append(facts)


def record_refused(request: HttpRequest, response: HttpResponse) -> None:
    """A request of a known tenant refused before routing (no valid bearer token)."""
    _append(_facts(request, response.status_code, None))


def instance_patients(request: HttpRequest) -> set[str]:
    """Patients of the resource a request addresses, as it is now (before a delete removes the
    index that says so)."""
    match = getattr(request, "resolver_match", None)
    if match is None or "resource_id" not in match.kwargs:
        return set()
    return patients.of_resources([(match.kwargs["resource_type"], match.kwargs["resource_id"])])


def _facts(request: HttpRequest, status: int, interaction) -> events.Facts:
    reason = request.headers.get(BREAK_GLASS_HEADER)
    return events.Facts(
        tenant=request.tenant.slug,
        status=status,
        interaction=interaction,
        context=getattr(request, "auth_context", None),
        source_ip=request.META.get("REMOTE_ADDR", ""),
        request_id=getattr(request, "request_id", ""),
        break_glass=reason.strip()[:_MAX_REASON] if reason and reason.strip() else None,
        recorded=now(),
    )


def _references(request: HttpRequest, response: HttpResponse, interaction) -> list[str]:
    """The resources reached, when a request names them: its URL, the Location of what it
    created or updated, or what a batch/transaction noted (audit.notes)."""
    noted = getattr(request, "audit_references", None)
    if noted is not None:
        return noted
    location = response.get("Location")
    if location and response.status_code < 300:
        return ["/".join(location.split("/")[-4:]) if "/_history/" in location else location]
    if interaction.resource_id:
        version = f"/_history/{interaction.version_id}" if interaction.version_id else ""
        return [f"{interaction.resource_type}/{interaction.resource_id}{version}"]
    return []


def _patients(request: HttpRequest, interaction, references: list[str]) -> set[str]:
    found = patients.of_context(getattr(request, "auth_context", None), interaction.resource_type)
    compartment = interactions.compartment_patient(request)
    if compartment:
        found.add(compartment)
    if interaction.subtype.startswith("search"):
        return found | patients.of_search(interaction.resource_type, _pairs(request))
    if references and interaction.subtype != "delete":
        found |= patients.of_resources([tuple(ref.split("/")[:2]) for ref in references])
    return found


def _pairs(request: HttpRequest) -> list[tuple[str, str]]:
    pairs = [(k, v) for k, values in request.GET.lists() for v in values]
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        pairs += [(k, v) for k, values in request.POST.lists() for v in values]
    return pairs


def _append(facts: events.Facts) -> None:
    resource = events.event(facts)
    context = facts.context
    chain.append(
        chain.Record(
            event_id=resource["id"],
            recorded=facts.recorded,
            patients=sorted(facts.patients),
            action=resource["action"],
            subtype=facts.interaction.subtype if facts.interaction else "",
            outcome=events.outcome(facts.status),
            client_id=(context.client_id or "") if context else "",
            agent=(context.user or "") if context else "",
            event=events.canonical(resource),
        )
    )
