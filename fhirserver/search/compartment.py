"""Membership of the R4 compartments (http://hl7.org/fhir/R4/compartmentdefinition.html:
Patient, Encounter, RelatedPerson, Practitioner, Device), as SQL on the search index.

A resource is in compartment C/X when one of the reference parameters C's definition lists for
its type points at C/X. The focal resource itself is only in its own compartment here (when the
definition lists its type at all, as `{def}` or Patient's `link`): Patient's `link` (other
Patient records linked to it) is not followed, so no linked record is reached without its own
authorization. Authorization (patient scopes, api/authorization.py) uses the Patient one.
"""

from __future__ import annotations

from fhirserver.registry import r4


def in_types(resource_type: str, compartment_type: str = "Patient") -> bool:
    """Whether resources of this type can be in a compartment of `compartment_type`."""
    return bool(r4().compartments.get(compartment_type, {}).get(resource_type))


def condition(resource_type: str, focal_id: str, compartment_type: str = "Patient") -> tuple[str, list]:
    """A condition on `r` (a fhir_resource row of `resource_type`, a type in_types): r is in
    the compartment of compartment_type/focal_id."""
    if resource_type == compartment_type:
        return "r.resource_id = %s", [focal_id]
    params = [p for p in r4().compartments[compartment_type][resource_type] if p != "{def}"]
    return (
        "r.resource_id IN (SELECT c.resource_id FROM fhir_index_reference c WHERE c.resource_type = %s"
        " AND c.param = ANY(%s) AND c.target_type = %s AND c.target_id = %s)",
        [resource_type, params, compartment_type, focal_id],
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
