"""Establishing the launch context of an authorization: the EHR launch's patient and encounter,
or the patient a user picks (SMART App Launch 2.x, "Launch context")."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fhirserver import errors
from fhirserver.storage.repository import Repository
from smart_auth.models import EhrLaunch
from smart_auth.tokens import LaunchContext

PICKER_LIMIT = 20


class LaunchContextError(Exception):
    pass


def establish_context(launch: str | None, scopes: list[str]) -> LaunchContext:
    """The context an EHR launch stands for, or an empty one for a standalone launch."""
    if not launch:
        return LaunchContext()
    found = EhrLaunch.objects.filter(launch_id=launch).first()
    if found is None or found.is_expired():
        raise LaunchContextError("launch is unknown or expired")
    return LaunchContext(patient=found.patient, encounter=found.encounter)


@dataclass(frozen=True)
class PatientChoice:
    id: str
    name: str
    birth_date: str


def patient_choices(name: str) -> list[PatientChoice]:
    """Patients whose name starts with `name` (FHIR string search), for the picker."""
    if not name.strip():
        return []
    repository = Repository()
    try:
        ids = sorted(repository.matching_ids("Patient", urlencode({"name": name})))[:PICKER_LIMIT]
    except errors.FhirError:
        return []
    return [_choice(repository.read_json("Patient", patient_id)) for patient_id in ids]


def is_patient(patient_id: str) -> bool:
    stored = Repository().current("Patient", patient_id)
    return stored is not None and not stored.deleted


def _choice(patient: dict) -> PatientChoice:
    names = patient.get("name") or [{}]
    first = names[0]
    text = first.get("text") or " ".join([*first.get("given", []), first.get("family", "")]).strip()
    return PatientChoice(patient["id"], text or "(no name)", patient.get("birthDate", ""))
