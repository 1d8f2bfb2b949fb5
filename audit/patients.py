"""Whose data a request touched: the patients an AuditEvent names (entity role 1, Patient).

- a Patient resource is its own patient; Patient/[id]/... URLs name theirs;
- a resource of a Patient-compartment type belongs to the patients it references through the
  compartment's parameters (R4 CompartmentDefinition patient), read from the search index:
  one indexed query for all the resources of a request;
- a search names the patients its criteria name (`patient`, `subject`, Patient `_id`);
- a patient-level token reaches only its launch patient's compartment, so that patient is named
  for whatever compartment data it read or searched.
"""

from __future__ import annotations

from django.db import connection

from fhirserver.registry import r4
from smart_auth.context import AuthContext

# Search parameters whose values name a patient (R4 SearchParameter patient / subject).
_PATIENT_PARAMETERS = ("patient", "patient:Patient", "subject:Patient")


def of_resources(references: list[tuple[str, str]]) -> set[str]:
    """Patients of these (type, id) resources, as the search index has them now."""
    found = {resource_id for resource_type, resource_id in references if resource_type == "Patient"}
    compartment = r4().patient_compartment
    members = [(t, i) for t, i in references if t != "Patient" and compartment.get(t)]
    if not members:
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.resource_type, c.param, c.target_id FROM fhir_index_reference c"
            " JOIN unnest(%s::text[], %s::text[]) AS m(resource_type, resource_id)"
            " ON c.resource_type = m.resource_type AND c.resource_id = m.resource_id"
            " WHERE c.target_type = 'Patient'",
            [[t for t, _ in members], [i for _, i in members]],
        )
        rows = cursor.fetchall()
    return found | {target for resource_type, param, target in rows if param in compartment[resource_type]}


def of_search(resource_type: str | None, pairs: list[tuple[str, str]]) -> set[str]:
    """Patients a search's criteria name."""
    found = set()
    for name, value in pairs:
        for item in value.split(","):
            if name in _PATIENT_PARAMETERS or (name == "subject" and _is_patient(item)):
                found.add(item.rstrip("/").rsplit("/", 1)[-1])
            elif name == "_id" and resource_type == "Patient":
                found.add(item)
    return {patient for patient in found if patient}


def _is_patient(reference: str) -> bool:
    parts = reference.rstrip("/").split("/")
    return len(parts) >= 2 and parts[-2] == "Patient"


def of_context(context: AuthContext | None, resource_type: str | None) -> set[str]:
    """A patient-level token's launch patient, for data of the Patient compartment."""
    if context is None or context.patient is None:
        return set()
    if not any(scope.startswith("patient/") for scope in context.scopes):
        return set()
    if resource_type is not None and not r4().patient_compartment.get(resource_type):
        return set()
    return {context.patient}
