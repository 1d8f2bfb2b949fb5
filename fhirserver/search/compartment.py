"""Membership of the Patient compartment (R4 CompartmentDefinition patient,
http://hl7.org/fhir/R4/compartmentdefinition-patient.html), as SQL on the search index.

A resource is in patient P's compartment when one of the reference parameters the definition
lists for its type points at Patient/P. The Patient resource itself is only in its own
compartment here: the definition's `link` (other Patient records linked to it) is not followed,
so no linked record is reached without its own authorization.
"""

from __future__ import annotations

from fhirserver.registry import r4


def in_types(resource_type: str) -> bool:
    """Whether resources of this type can be in a patient's compartment."""
    return bool(r4().patient_compartment.get(resource_type))


def condition(resource_type: str, patient_id: str) -> tuple[str, list]:
    """A condition on `r` (a fhir_resource row of `resource_type`, a type in_types): r is in
    the compartment of Patient/patient_id."""
    if resource_type == "Patient":
        return "r.resource_id = %s", [patient_id]
    return (
        "r.resource_id IN (SELECT c.resource_id FROM fhir_index_reference c WHERE c.resource_type = %s"
        " AND c.param = ANY(%s) AND c.target_type = 'Patient' AND c.target_id = %s)",
        [resource_type, list(r4().patient_compartment[resource_type]), patient_id],
    )


def of_patients(resource_type: str, patient_ids: str, params: list) -> tuple[str, list]:
    """A condition on `r` (a fhir_resource row of `resource_type`, a type in_types): r is in
    the compartment of a patient whose id meets `patient_ids`, an SQL test such as
    `IN (SELECT ...)` or `= ANY(%s)` with its `params`."""
    if resource_type == "Patient":
        return f"r.resource_id {patient_ids}", list(params)
    return (
        "r.resource_id IN (SELECT c.resource_id FROM fhir_index_reference c WHERE c.resource_type = %s"
        f" AND c.param = ANY(%s) AND c.target_type = 'Patient' AND c.target_id {patient_ids})",
        [resource_type, list(r4().patient_compartment[resource_type]), *params],
    )
