"""Search index extraction (http://hl7.org/fhir/R4/search.html#ptypes): every R4 search expression
compiles, the Synthea data extracts without errors, and hand-written resources give the rows
the spec's per-type rules call for."""

from __future__ import annotations

import gzip
import json
import re
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from fhirserver.registry import r4
from fhirserver.search.expressions import ExpressionError, applies_to, compile_expression
from fhirserver.search.extraction import extract
from fhirserver.search.index_values import CONVERTERS, EARLIEST, LATEST, IndexRows, normalize

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def rows_of(resource: dict, kind: str, code: str) -> list[tuple]:
    """The rows of one parameter, without the parameter code."""
    return [row[1:] for row in getattr(extract(resource), kind) if row[0] == code]


# --- compiling ---


def test_every_indexed_r4_expression_compiles_and_has_a_rule_for_each_value_type():
    registry, problems, compiled = r4(), [], 0
    for parameter in registry.search_parameters:
        if parameter.type not in CONVERTERS or parameter.expression is None:
            continue
        for resource_type in sorted(registry.resource_types):
            if not any(applies_to(base, resource_type) for base in parameter.base):
                continue
            try:
                expression = compile_expression(parameter.expression, resource_type)
            except ExpressionError as error:
                problems.append(str(error))
                continue
            compiled += 1
            if not expression.types:
                problems.append(f"{parameter.code} yields nothing for {resource_type}")
            if unhandled := expression.types - CONVERTERS[parameter.type].keys():
                problems.append(f"{parameter.type} {parameter.code} on {resource_type}: {unhandled}")
    assert problems == []
    assert compiled > 1300


def test_r4_as_syntax_compiles_like_of_type():
    observation = {"resourceType": "Observation", "valueQuantity": {"value": 5}, "valueString": "x"}
    for text in ("(Observation.value as Quantity)", "Observation.value.ofType(Quantity)"):
        assert compile_expression(text, "Observation")(observation) == [({"value": 5}, "Quantity")]
    concept = compile_expression("(Observation.value as CodeableConcept).text", "Observation")
    assert concept({"resourceType": "Observation", "valueCodeableConcept": {"text": "t"}}) == [
        ("t", "string")
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.name.first()",
        "Patient.nickname",
        "Patient.name.select(given)",
        "Patient.gender or true",
        "a +",
    ],
)
def test_unsupported_expressions_fail_when_compiled_naming_the_expression(expression):
    with pytest.raises(ExpressionError, match=re.escape(f"in search expression: {expression}")):
        compile_expression(expression, "Patient")


def test_alternatives_for_other_resource_types_yield_nothing():
    expression = compile_expression("Observation.code | Condition.code", "Condition")
    code = {"coding": [{"code": "x"}]}
    assert expression({"resourceType": "Condition", "code": code}) == [(code, "CodeableConcept")]


# --- Synthea data ---


def synthea_files() -> list[Path]:
    patients = sorted((SYNTHEA / "blaze-synthea-2021").glob("[!0]*.json.gz"))[:5]
    shared = sorted((SYNTHEA / "blaze-synthea-2021").glob("0-*.json.gz"))
    return sorted((SYNTHEA / "smart-synthea-2019").glob("*.json.gz")) + shared + patients


def test_synthea_resources_extract_and_timings(capsys):
    files = synthea_files()
    assert len(files) >= 10
    timings: dict[str, list[float]] = defaultdict(list)
    for path in files:
        for entry in json.loads(gzip.decompress(path.read_bytes()))["entry"]:
            resource = entry["resource"]
            start = time.perf_counter()
            rows = extract(resource)
            timings[resource["resourceType"]].append(time.perf_counter() - start)
            assert (None, resource["id"], None) in [row[1:] for row in rows.tokens if row[0] == "_id"]
    everything = [t for per_type in timings.values() for t in per_type]
    with capsys.disabled():
        print(f"\nextracted {len(everything)} resources, median {statistics.median(everything) * 1e6:.0f} µs")
        for resource_type, per_type in sorted(timings.items(), key=lambda item: -len(item[1]))[:8]:
            median = statistics.median(per_type) * 1e6
            print(f"  {resource_type:<22} n={len(per_type):<5} median {median:.0f} µs")


def test_skipping_parameters_whose_properties_are_absent_loses_no_rows():
    registry = r4()
    path = sorted((SYNTHEA / "smart-synthea-2019").glob("*.json.gz"))[0]
    for entry in json.loads(gzip.decompress(path.read_bytes()))["entry"]:
        resource = entry["resource"]
        expected = IndexRows()
        for parameter in registry.search_parameters:
            if parameter.type not in CONVERTERS or parameter.expression is None:
                continue
            if any(applies_to(base, resource["resourceType"]) for base in parameter.base):
                expression = compile_expression(parameter.expression, resource["resourceType"])
                for value, fhir_type in expression(resource):
                    CONVERTERS[parameter.type][fhir_type](parameter.code, value, expected)
        expected.deduplicate()
        actual = extract(resource)
        for kind in ("tokens", "strings", "dates", "quantities", "references", "uris"):
            assert sorted(map(repr, getattr(actual, kind))) == sorted(map(repr, getattr(expected, kind)))


# --- Patient ---

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "lastUpdated": "2024-03-01T10:00:00.123+02:00",
        "tag": [{"system": "http://example.org/tags", "code": "test", "display": "Test"}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
        "source": "http://example.org/source#1",
    },
    "identifier": [
        {
            "system": "http://example.org/mrn",
            "value": "123",
            "type": {"coding": [{"system": "http://example.org/v2-0203", "code": "MR"}], "text": "MRN"},
        },
        {"value": "no-system"},
    ],
    "active": True,
    "name": [{"family": "Sánchez", "given": ["José  María", "Luis"], "prefix": ["Dr."]}],
    "telecom": [
        {"system": "phone", "value": "555-0100"},
        {"system": "email", "value": "jose@example.org"},
    ],
    "gender": "male",
    "birthDate": "1970",
    "address": [{"line": ["1 Main St"], "city": "Zürich", "postalCode": "8001", "country": "CH"}],
    "deceasedBoolean": False,
    "managingOrganization": {"reference": "#org"},
}


def test_patient_names_are_searchable_without_case_or_accents():
    assert rows_of(PATIENT, "strings", "family") == [("sanchez", "Sánchez")]
    assert rows_of(PATIENT, "strings", "given") == [("jose maria", "José  María"), ("luis", "Luis")]
    assert ("dr.", "Dr.") in rows_of(PATIENT, "strings", "name")
    assert normalize("  Ærø\tÅSE ") == "ærø ase"


def test_patient_address_birthdate_and_tokens():
    assert rows_of(PATIENT, "strings", "address-postalcode") == [("8001", "8001")]
    assert rows_of(PATIENT, "strings", "address-city") == [("zurich", "Zürich")]
    assert ("1 main st", "1 Main St") in rows_of(PATIENT, "strings", "address")
    assert rows_of(PATIENT, "dates", "birthdate") == [(utc(1970, 1, 1), utc(1971, 1, 1))]
    assert rows_of(PATIENT, "tokens", "gender") == [(None, "male", None)]
    assert rows_of(PATIENT, "tokens", "active") == [(None, "true", None)]
    assert rows_of(PATIENT, "tokens", "deceased") == [(None, "false", None)]
    assert rows_of(PATIENT, "references", "organization") == []  # contained


def test_patient_identifier_rows_keep_system_and_type():
    assert rows_of(PATIENT, "tokens", "identifier") == [
        ("http://example.org/mrn", "123", "MRN"),
        (None, "no-system", None),
    ]
    assert rows_of(PATIENT, "identifier_types", "identifier") == [("http://example.org/v2-0203", "MR", "123")]


def test_telecom_is_split_by_contact_point_system():
    assert rows_of(PATIENT, "tokens", "phone") == [(None, "555-0100", None)]
    assert rows_of(PATIENT, "tokens", "email") == [(None, "jose@example.org", None)]
    assert len(rows_of(PATIENT, "tokens", "telecom")) == 2


def test_deceased_is_false_when_absent():
    patient = {"resourceType": "Patient", "id": "alive"}
    assert rows_of(patient, "tokens", "deceased") == [(None, "false", None)]


def test_deceased_date_makes_deceased_true():
    patient = {"resourceType": "Patient", "id": "d", "deceasedDateTime": "2020-05"}
    assert rows_of(patient, "tokens", "deceased") == [(None, "true", None)]
    assert rows_of(patient, "dates", "death-date") == [(utc(2020, 5, 1), utc(2020, 6, 1))]


def test_common_parameters():
    assert rows_of(PATIENT, "tokens", "_id") == [(None, "p1", None)]
    last_updated = utc(2024, 3, 1, 8, 0, 0, 123000)
    assert rows_of(PATIENT, "dates", "_lastUpdated") == [
        (last_updated, last_updated.replace(microsecond=123001))
    ]
    assert rows_of(PATIENT, "tokens", "_tag") == [("http://example.org/tags", "test", "Test")]
    assert rows_of(PATIENT, "tokens", "_security")[0][1] == "R"
    assert r4_parameter_type("_profile") == "uri"
    assert rows_of(PATIENT, "uris", "_profile") == [
        ("http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",)
    ]
    assert rows_of(PATIENT, "uris", "_source") == [("http://example.org/source#1",)]


def r4_parameter_type(code: str) -> str:
    return next(p.type for p in r4().search_parameters if p.code == code and "Resource" in p.base)


# --- Observation ---

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [{"coding": [{"system": "http://example.org/cat", "code": "vital-signs"}], "text": "Vitals"}],
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            {"system": "http://snomed.info/sct", "code": "364075005"},
        ],
        "text": "HR",
    },
    "subject": {"reference": "Patient/123"},
    "effectiveDateTime": "2024-01-01T10:00:00",
    "valueQuantity": {
        "value": 72.5,
        "unit": "beats/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
}


def test_observation_code_and_category_tokens():
    assert rows_of(OBSERVATION, "tokens", "code") == [
        ("http://loinc.org", "8867-4", "Heart rate"),
        ("http://snomed.info/sct", "364075005", "HR"),
    ]
    assert rows_of(OBSERVATION, "tokens", "category") == [("http://example.org/cat", "vital-signs", "Vitals")]
    assert rows_of({**OBSERVATION, "code": {"text": "only text"}}, "tokens", "code") == []


def test_observation_subject_and_patient_references():
    assert rows_of(OBSERVATION, "references", "subject") == [("Patient", "123", None)]
    assert rows_of(OBSERVATION, "references", "patient") == [("Patient", "123", None)]
    group = {**OBSERVATION, "subject": {"reference": "Group/g1"}}
    assert rows_of(group, "references", "subject") == [("Group", "g1", None)]
    assert rows_of(group, "references", "patient") == []


def test_observation_value_quantity_with_precision_range():
    assert rows_of(OBSERVATION, "quantities", "value-quantity") == [
        (
            Decimal("72.5"),
            Decimal("72.45"),
            Decimal("72.55"),
            "http://unitsofmeasure.org",
            "/min",
            "beats/min",
        )
    ]
    whole = {**OBSERVATION, "valueQuantity": {"value": 100, "unit": "mg"}}
    assert rows_of(whole, "quantities", "value-quantity") == [
        (Decimal(100), Decimal("99.5"), Decimal("100.5"), None, None, "mg")
    ]
    assert rows_of(OBSERVATION, "tokens", "value-concept") == []


def test_observation_dates_from_effective_date_time_and_period():
    assert rows_of(OBSERVATION, "dates", "date") == [(utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 0, 1))]
    period = {k: v for k, v in OBSERVATION.items() if k != "effectiveDateTime"}
    period["effectivePeriod"] = {"start": "2024-01-01", "end": "2024-01-03T12:00:00+01:00"}
    assert rows_of(period, "dates", "date") == [(utc(2024, 1, 1), utc(2024, 1, 3, 11, 0, 1))]


# --- other resources ---


def test_encounter_period_open_ends():
    encounter = {"resourceType": "Encounter", "id": "e", "status": "planned", "class": {"code": "AMB"}}
    started = {**encounter, "period": {"start": "2024-02"}}
    assert rows_of(started, "dates", "date") == [(utc(2024, 2, 1), LATEST)]
    ended = {**encounter, "period": {"end": "2024-02-10"}}
    assert rows_of(ended, "dates", "date") == [(EARLIEST, utc(2024, 2, 11))]


def test_medication_request_medication_as_concept_or_reference():
    request = {"resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "order"}
    request["subject"] = {"reference": "Patient/1"}
    coded = {
        **request,
        "medicationCodeableConcept": {"coding": [{"system": "http://rxnorm", "code": "316049"}]},
    }
    assert rows_of(coded, "tokens", "code") == [("http://rxnorm", "316049", None)]
    assert rows_of(coded, "references", "medication") == []
    referenced = {
        **request,
        "medicationReference": {"reference": "http://other.org/fhir/Medication/7/_history/2"},
    }
    assert rows_of(referenced, "tokens", "code") == []
    assert rows_of(referenced, "references", "medication") == [
        ("Medication", "7", "http://other.org/fhir/Medication/7/_history/2")
    ]


def test_condition_onset_date_and_age():
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "urn:uuid:1234"}}
    dated = {**condition, "onsetDateTime": "2019-06-15"}
    assert rows_of(dated, "dates", "onset-date") == [(utc(2019, 6, 15), utc(2019, 6, 16))]
    assert rows_of(dated, "references", "subject") == [(None, None, "urn:uuid:1234")]
    aged = {**condition, "onsetAge": {"value": 40, "system": "http://unitsofmeasure.org", "code": "a"}}
    assert rows_of(aged, "quantities", "onset-age")[0][:3] == (Decimal(40), Decimal("39.5"), Decimal("40.5"))
    assert rows_of(aged, "dates", "onset-date") == []
    ranged = {**condition, "onsetRange": {"low": {"value": 20, "code": "a"}, "high": {"value": 30}}}
    assert rows_of(ranged, "quantities", "onset-age") == [
        (Decimal(20), Decimal("19.5"), Decimal("30.5"), None, "a", None)
    ]


def test_canonical_references_with_and_without_version():
    plan = {"resourceType": "PlanDefinition", "id": "pd", "status": "draft"}
    plan["library"] = ["http://example.org/fhir/Library/lib|1.0"]
    assert rows_of(plan, "references", "depends-on") == [
        ("Library", "lib", "http://example.org/fhir/Library/lib"),
        ("Library", "lib", "http://example.org/fhir/Library/lib|1.0"),
    ]
    plan["relatedArtifact"] = [
        {"type": "depends-on", "resource": "http://example.org/ValueSet/vs"},
        {"type": "successor", "resource": "http://example.org/PlanDefinition/next"},
    ]
    successors = rows_of(plan, "references", "successor")
    assert successors == [("PlanDefinition", "next", "http://example.org/PlanDefinition/next")]
    assert ("ValueSet", "vs", "http://example.org/ValueSet/vs") in rows_of(plan, "references", "depends-on")


def test_money_numbers_and_booleans():
    invoice = {"resourceType": "Invoice", "id": "i", "status": "issued"}
    invoice["totalGross"] = {"value": 12.30, "currency": "EUR"}
    assert rows_of(invoice, "quantities", "totalgross") == [
        (Decimal("12.3"), Decimal("12.25"), Decimal("12.35"), "urn:iso:std:iso:4217", "EUR", None)
    ]
    risk = {
        "resourceType": "RiskAssessment",
        "id": "r",
        "status": "final",
        "subject": {"reference": "Patient/1"},
    }
    risk["prediction"] = [
        {"probabilityDecimal": 0.25},
        {"probabilityRange": {"low": {"value": 1}, "high": {"value": 2}}},
    ]
    assert rows_of(risk, "numbers", "probability") == [
        (Decimal("0.25"), Decimal("0.245"), Decimal("0.255")),
        (Decimal(1), Decimal("0.5"), Decimal("2.5")),
    ]


def test_duplicate_rows_are_dropped():
    observation = {**OBSERVATION, "category": OBSERVATION["category"] * 2}
    assert len(rows_of(observation, "tokens", "category")) == 1


def test_bundle_composition_is_the_first_entry():
    bundle = {"resourceType": "Bundle", "id": "b", "type": "document"}
    bundle["entry"] = [{"resource": {"resourceType": "Composition", "id": "c1"}}, {"resource": {"id": "x"}}]
    assert rows_of(bundle, "references", "composition") == [("Composition", "c1", None)]


def test_timing_events_and_bounds():
    care_plan = {"resourceType": "CarePlan", "id": "cp", "status": "active", "intent": "plan"}
    care_plan["subject"] = {"reference": "Patient/1"}
    timing = {"event": ["2024-05-01T09:00:00Z"], "repeat": {"boundsPeriod": {"start": "2024-06-01"}}}
    care_plan["activity"] = [{"detail": {"status": "scheduled", "scheduledTiming": timing}}]
    assert rows_of(care_plan, "dates", "activity-date") == [
        (utc(2024, 5, 1, 9), utc(2024, 5, 1, 9, 0, 1)),
        (utc(2024, 6, 1), LATEST),
    ]
