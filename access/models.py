"""Access policy as data, per tenant, edited in the tenant admin (docs/architecture.md, "ABAC,
security labels and consent"). Consents are FHIR Consent resources, not rows here."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models

from fhirserver import errors

PLACEHOLDER = re.compile(r"\{([A-Za-z]+)\}")
# The user attributes a rule may name: the token's fhirUser, and UserProfile.organization.
ATTRIBUTES = ("fhirUser", "organization")


class AccessRule(models.Model):
    """Which patients users of a role reach: a FHIR search on Patient, with the user's
    attributes in braces, e.g. `organization={organization}`,
    `general-practitioner={fhirUser}` or `_has:CareTeam:patient:participant={fhirUser}`.

    A role without active rules is not restricted; with several, a patient matching any one is
    reached. Resources of Patient-compartment types are reached when they are in the
    compartment of a reached patient; other types are not affected."""

    role = models.CharField(max_length=40, db_index=True)
    patient_criteria = models.TextField(
        help_text="FHIR search parameters on Patient, e.g. organization={organization}"
    )
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ("role", "id")

    def __str__(self) -> str:
        return f"{self.role}: Patient?{self.patient_criteria}"

    def clean(self) -> None:
        from access.policy import rule_query  # the search parser needs the registry

        unknown = set(PLACEHOLDER.findall(self.patient_criteria)) - set(ATTRIBUTES)
        if unknown:
            raise ValidationError({"patient_criteria": f"unknown attributes: {', '.join(sorted(unknown))}"})
        sample = {name: "Example/1" for name in ATTRIBUTES}
        try:
            parsed = rule_query(self.patient_criteria, sample)
        except errors.FhirError as exc:
            raise ValidationError({"patient_criteria": str(exc)}) from None
        if parsed is None or not parsed.clauses:
            raise ValidationError({"patient_criteria": "not a supported search on Patient"})


class SecurityLabelRule(models.Model):
    """Resources carrying this label in meta.security are seen only by users holding `role`
    (or admin, or through break-glass)."""

    system = models.CharField(max_length=200)
    code = models.CharField(max_length=100)
    role = models.CharField(max_length=40)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ("system", "code")
        constraints = [models.UniqueConstraint(fields=["system", "code"], name="access_label_unique")]

    def __str__(self) -> str:
        return f"{self.system}|{self.code} needs {self.role}"
