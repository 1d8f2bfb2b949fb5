"""What the consent screen offers: the requested scopes, and for Condition and Observation the
category-restricted (SMART v2 granular) scopes a user may grant instead of the whole type."""

from __future__ import annotations

from dataclasses import dataclass

from smart_auth.scopes import ResourceScope, parse_scope

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
US_CORE_CONDITION_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/condition-category"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"

CATEGORIES = {
    "Condition": [
        (CONDITION_CATEGORY, "encounter-diagnosis", "Encounter diagnoses"),
        (CONDITION_CATEGORY, "problem-list-item", "Problem list"),
        (US_CORE_CONDITION_CATEGORY, "health-concern", "Health concerns"),
    ],
    "Observation": [
        (OBSERVATION_CATEGORY, "laboratory", "Laboratory results"),
        (OBSERVATION_CATEGORY, "vital-signs", "Vital signs"),
        (OBSERVATION_CATEGORY, "social-history", "Social history"),
        (OBSERVATION_CATEGORY, "survey", "Surveys"),
        (OBSERVATION_CATEGORY, "exam", "Exams"),
        (OBSERVATION_CATEGORY, "imaging", "Imaging"),
        (OBSERVATION_CATEGORY, "procedure", "Procedures"),
        (OBSERVATION_CATEGORY, "therapy", "Therapy"),
        (OBSERVATION_CATEGORY, "activity", "Activity"),
        (US_CORE_CATEGORY, "sdoh", "Social determinants of health"),
    ],
}

EXPLANATIONS = {
    "openid": "Know who you are (your login identity)",
    "fhirUser": "Know which FHIR record is yours",
    "profile": "Read your profile",
    "launch": "Use the record open in the EHR",
    "launch/patient": "Use the patient you choose",
    "launch/encounter": "Use the current encounter",
    "offline_access": "Keep access after you close the app, until you revoke it",
    "online_access": "Keep access while you are logged in",
}


@dataclass(frozen=True)
class ScopeChoice:
    scope: str
    label: str
    checked: bool


def choices(requested: list[str]) -> list[ScopeChoice]:
    offered: list[ScopeChoice] = []
    for scope in requested:
        offered.append(ScopeChoice(scope, EXPLANATIONS.get(scope, scope), checked=True))
        offered.extend(_granular(scope, requested))
    return offered


def _granular(scope: str, requested: list[str]) -> list[ScopeChoice]:
    parsed = parse_scope(scope)
    if (
        not isinstance(parsed, ResourceScope)
        or parsed.restriction
        or parsed.level == "system"
        or "s" not in parsed.permissions
        or parsed.resource_type not in ("*", *CATEGORIES)
    ):
        return []
    level, resource_type = parsed.level, parsed.resource_type
    types = CATEGORIES if resource_type == "*" else {resource_type: CATEGORIES[resource_type]}
    granular = []
    for type_name, categories in types.items():
        for system, code, label in categories:
            candidate = f"{level}/{type_name}.rs?category={system}|{code}"
            if candidate not in requested:
                granular.append(ScopeChoice(candidate, f"only {label} ({type_name})", checked=False))
    return granular


def granted(requested: list[str], ticked: list[str]) -> list[str]:
    """The ticked scopes that the screen offered (anything else in the form is ignored)."""
    offered = {choice.scope for choice in choices(requested)}
    return [scope for scope in dict.fromkeys(ticked) if scope in offered]
