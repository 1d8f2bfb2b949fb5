"""Structural validation: real Synthea data passes, and each kind of error is reported where it is.

Negative cases change one thing in an otherwise valid resource and expect exactly the issues that
change causes, as (code, expression) pairs, so a stray or misplaced issue fails too.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from fhirserver.validation import MAX_ISSUES, validate_resource

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
SYNTHEA_FILES = sorted(SYNTHEA.rglob("*.json.gz"))
EXTENSION = {"url": "http://example.org/fhir/StructureDefinition/note", "valueString": "kept"}
ABSENT = {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}


def patient(**elements) -> dict:
    return {"resourceType": "Patient", **elements}


def observation(**elements) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "Heart rate"}, **elements}


def found(resource: object, expected_type: str | None = None) -> list[tuple[str, str]]:
    return [(issue.code, issue.expression) for issue in validate_resource(resource, expected_type)]


def test_synthea_data_is_present():
    assert len(SYNTHEA_FILES) >= 52, f"Synthea bundles expected under {SYNTHEA}"


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=lambda path: path.name)
def test_every_synthea_resource_is_valid(path):
    bundle = orjson.loads(gzip.decompress(path.read_bytes()))
    problems = [
        (index, issue)
        for index, entry in enumerate(bundle["entry"])
        for issue in validate_resource(entry["resource"])
    ]
    assert problems == []
    assert validate_resource(bundle, "Bundle") == []


VALID = {
    "minimal patient": patient(),
    "primitive extension beside its value": patient(birthDate="1970", _birthDate={"extension": [EXTENSION]}),
    "primitive extension without a value": patient(_birthDate={"extension": [ABSENT]}),
    "aligned arrays with nulls": patient(
        name=[{"given": ["Jim", None, "Bob"], "_given": [None, {"extension": [EXTENSION]}, None]}]
    ),
    "required element present only as an extension": {
        "resourceType": "Observation",
        "_status": {"extension": [ABSENT]},
        "code": {"text": "Heart rate"},
    },
    "choice value and its own extension": observation(valueString="72", _valueString={"id": "v"}),
    "all dateTime precisions": observation(
        component=[
            {"code": {"text": when}, "valueDateTime": when}
            for when in (
                "2020",
                "2020-02",
                "2020-02-29",
                "2020-02-29T23:59:60.123+14:00",
                "2020-02-29T00:00:00Z",
            )
        ]
    ),
    "decimal as integer and exponent": observation(
        referenceRange=[{"low": {"value": 60}, "high": {"value": 1.0e2}}]
    ),
    "integer bounds": observation(
        component=[{"code": {"text": "n"}, "valueInteger": n} for n in (-(2**31), 0, 2**31 - 1)]
    ),
    "code with single inner spaces": patient(language="en US"),
    "narrative": patient(
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jim</div>'}
    ),
    "MIME-wrapped base64": patient(photo=[{"contentType": "image/png", "data": "iVBO\r\nRw0K\nGgo="}]),
    "contained resource": patient(contained=[{"resourceType": "Practitioner", "id": "p1"}]),
    "resource element typed as OperationOutcome": {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {
                "response": {
                    "status": "201 Created",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "information", "code": "informational"}],
                    },
                }
            }
        ],
    },
    "fhir_comments": patient(fhir_comments=["old-style comment"]),
    "resourceType as an element of ExampleScenario.instance": {
        "resourceType": "ExampleScenario",
        "status": "draft",
        "instance": [{"resourceId": "p1", "resourceType": "Patient"}],
    },
}


@pytest.mark.parametrize("resource", VALID.values(), ids=VALID.keys())
def test_valid_resources_have_no_issues(resource):
    assert found(resource) == []


INVALID = {
    # unknown elements
    "unknown element": (patient(nickname="Jim"), [("structure", "Patient.nickname")]),
    "unknown nested element": (
        patient(name=[{"family": "Chalmers", "nickname": "Jim"}]),
        [("structure", "Patient.name[0].nickname")],
    ),
    "resourceType inside a datatype": (
        patient(name=[{"resourceType": "HumanName"}]),
        [("structure", "Patient.name[0].resourceType")],
    ),
    "extension of Resource.id": (patient(id="p1", _id={"id": "x"}), [("structure", "Patient._id")]),
    "unknown element in a primitive extension": (
        patient(_birthDate={"value": "1970"}),
        [("structure", "Patient._birthDate.value")],
    ),
    # wrong JSON types
    "string for boolean": (patient(active="true"), [("value", "Patient.active")]),
    "number for string": (patient(name=[{"family": 42}]), [("value", "Patient.name[0].family")]),
    "bool for integer": (observation(valueInteger=True), [("value", "Observation.valueInteger")]),
    "float for integer": (observation(valueInteger=1.0), [("value", "Observation.valueInteger")]),
    "string for decimal": (
        observation(valueQuantity={"value": "72"}),
        [("value", "Observation.valueQuantity.value")],
    ),
    "bool for decimal": (
        observation(valueQuantity={"value": False}),
        [("value", "Observation.valueQuantity.value")],
    ),
    "NaN for decimal": (
        observation(valueQuantity={"value": float("nan")}),
        [("value", "Observation.valueQuantity.value")],
    ),
    "object for primitive": (patient(birthDate={"value": "1970"}), [("value", "Patient.birthDate")]),
    "string for complex type": (observation(code="8867-4"), [("structure", "Observation.code")]),
    "array for single": (patient(gender=["male"]), [("structure", "Patient.gender")]),
    "array for single complex": (
        patient(maritalStatus=[{"text": "M"}]),
        [("structure", "Patient.maritalStatus")],
    ),
    # cardinality and emptiness
    "object for repeating": (patient(name={"family": "Chalmers"}), [("structure", "Patient.name")]),
    "string for repeating": (patient(name=[{"given": "Jim"}]), [("structure", "Patient.name[0].given")]),
    "empty array": (patient(name=[]), [("structure", "Patient.name")]),
    "empty object": (patient(maritalStatus={}), [("structure", "Patient.maritalStatus")]),
    "empty object in array": (patient(name=[{}]), [("structure", "Patient.name[0]")]),
    "empty primitive extension": (patient(_birthDate={}), [("structure", "Patient._birthDate")]),
    "null value": (patient(gender=None), [("structure", "Patient.gender")]),
    "null in complex array": (patient(name=[None]), [("structure", "Patient.name[0]")]),
    "null in primitive array without extension": (
        patient(name=[{"given": ["Jim", None]}]),
        [("structure", "Patient.name[0].given[1]")],
    ),
    "null on both sides of aligned arrays": (
        patient(name=[{"given": ["Jim", None], "_given": [None, None]}]),
        [("structure", "Patient.name[0].given[1]"), ("structure", "Patient.name[0]._given[1]")],
    ),
    "null extension without a value": (
        patient(name=[{"_given": [None]}]),
        [("structure", "Patient.name[0]._given[0]")],
    ),
    "extensions array shorter than values": (
        patient(name=[{"given": ["Jim", "Bob"], "_given": [{"id": "g1"}]}]),
        [("structure", "Patient.name[0]._given")],
    ),
    "extensions array longer than values": (
        patient(name=[{"given": ["Jim"], "_given": [None, {"id": "g2"}]}]),
        [("structure", "Patient.name[0]._given")],
    ),
    # primitive formats
    "empty string": (patient(name=[{"family": ""}]), [("value", "Patient.name[0].family")]),
    "empty code": (patient(gender=""), [("value", "Patient.gender")]),
    "month 13": (patient(birthDate="1970-13-01"), [("value", "Patient.birthDate")]),
    "US date": (patient(birthDate="01/02/1970"), [("value", "Patient.birthDate")]),
    "unpadded date": (patient(birthDate="1970-1-1"), [("value", "Patient.birthDate")]),
    "year zero": (patient(birthDate="0000"), [("value", "Patient.birthDate")]),
    "dateTime with time but no zone": (
        observation(effectiveDateTime="2020-01-01T10:00:00"),
        [("value", "Observation.effectiveDateTime")],
    ),
    "dateTime hour 25": (
        observation(effectiveDateTime="2020-01-01T25:00:00Z"),
        [("value", "Observation.effectiveDateTime")],
    ),
    "instant without time": (observation(issued="2020-01-01"), [("value", "Observation.issued")]),
    "instant without zone": (observation(issued="2020-01-01T10:00:00"), [("value", "Observation.issued")]),
    "time with zone": (observation(valueTime="10:00:00Z"), [("value", "Observation.valueTime")]),
    "id with space": (patient(id="p 1"), [("value", "Patient.id")]),
    "id with underscore": (patient(id="p_1"), [("value", "Patient.id")]),
    "id of 65 characters": (patient(id="a" * 65), [("value", "Patient.id")]),
    "code with double space": (patient(language="en  US"), [("value", "Patient.language")]),
    "uri with space": (patient(implicitRules="http://example.org/a b"), [("value", "Patient.implicitRules")]),
    "oid with a leading zero": (
        patient(extension=[{"url": "http://example.org/oid", "valueOid": "urn:oid:1.02"}]),
        [("value", "Patient.extension[0].valueOid")],
    ),
    "uuid in upper case": (
        patient(
            extension=[
                {
                    "url": "http://example.org/u",
                    "valueUuid": "urn:uuid:" + "A" * 8 + "-0000-0000-0000-" + "0" * 12,
                }
            ]
        ),
        [("value", "Patient.extension[0].valueUuid")],
    ),
    "base64 with a broken quartet": (
        patient(photo=[{"data": "iVB ORw0K"}]),
        [("value", "Patient.photo[0].data")],
    ),
    "base64 with invalid characters": (
        patient(photo=[{"data": "not base64!"}]),
        [("value", "Patient.photo[0].data")],
    ),
    "narrative not in a div": (
        patient(text={"status": "generated", "div": "<p>Jim</p>"}),
        [("value", "Patient.text.div")],
    ),
    "integer above 32 bits": (observation(valueInteger=2**31), [("value", "Observation.valueInteger")]),
    "integer below 32 bits": (
        observation(valueInteger=-(2**31) - 1),
        [("value", "Observation.valueInteger")],
    ),
    "positiveInt 0": (patient(telecom=[{"value": "555", "rank": 0}]), [("value", "Patient.telecom[0].rank")]),
    "unsignedInt -1": (patient(photo=[{"size": -1}]), [("value", "Patient.photo[0].size")]),
    # required elements, choices, bindings
    "missing status": (
        {"resourceType": "Observation", "code": {"text": "Heart rate"}},
        [("required", "Observation.status")],
    ),
    "missing code": ({"resourceType": "Observation", "status": "final"}, [("required", "Observation.code")]),
    "missing nested required": (
        patient(link=[{"type": "seealso"}]),
        [("required", "Patient.link[0].other")],
    ),
    "extension without url": (
        patient(extension=[{"valueString": "x"}]),
        [("required", "Patient.extension[0].url")],
    ),
    "missing required choice": (
        {"resourceType": "Library", "status": "draft", "type": {"text": "t"}, "useContext": [{"code": {}}]},
        [("structure", "Library.useContext[0].code"), ("required", "Library.useContext[0].value[x]")],
    ),
    "two choice types": (
        observation(valueString="72", valueQuantity={"value": 72}),
        [("structure", "Observation.value[x]")],
    ),
    "choice value beside another type's extension": (
        observation(valueString="72", _valueBoolean={"extension": [ABSENT]}),
        [("structure", "Observation.value[x]")],
    ),
    "code outside required binding": (patient(gender="mal"), [("code-invalid", "Patient.gender")]),
    "nested code outside required binding": (
        observation(valueQuantity={"value": 72, "comparator": "=="}),
        [("code-invalid", "Observation.valueQuantity.comparator")],
    ),
    # nested resources
    "contained resource with an unknown element": (
        patient(contained=[{"resourceType": "Practitioner", "id": "p1", "nickname": "Doc"}]),
        [("structure", "Patient.contained[0].nickname")],
    ),
    "contained resource without resourceType": (
        patient(contained=[{"id": "p1"}]),
        [("invalid", "Patient.contained[0].resourceType")],
    ),
    "bundle entry with an invalid code": (
        {"resourceType": "Bundle", "type": "collection", "entry": [{}, {"resource": patient(gender="mal")}]},
        [("structure", "Bundle.entry[0]"), ("code-invalid", "Bundle.entry[1].resource.gender")],
    ),
    "parameter resource that is not a resource": (
        {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": {"name": "x"}}]},
        [("invalid", "Parameters.parameter[0].resource.resourceType")],
    ),
}


@pytest.mark.parametrize(("resource", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_resources_are_reported_where_the_error_is(resource, expected):
    assert found(resource) == expected


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ([], [("invalid", "Resource")]),
        ("Patient", [("invalid", "Resource")]),
        (None, [("invalid", "Resource")]),
        ({}, [("invalid", "Resource.resourceType")]),
        ({"resourceType": "Patientt"}, [("invalid", "Resource.resourceType")]),
        ({"resourceType": ["Patient"]}, [("invalid", "Resource.resourceType")]),
        ({"resourceType": "DomainResource"}, [("invalid", "Resource.resourceType")]),
        ({"resourceType": "HumanName", "family": "Chalmers"}, [("invalid", "Resource.resourceType")]),
    ],
    ids=["array", "string", "null", "no resourceType", "unknown", "not a string", "abstract", "datatype"],
)
def test_root_must_be_an_r4_resource(resource, expected):
    assert found(resource) == expected


def test_expected_type_mismatch_is_reported_and_the_resource_still_checked():
    assert found(patient(gender="mal"), "Observation") == [
        ("invalid", "Patient.resourceType"),
        ("code-invalid", "Patient.gender"),
    ]
    assert found(patient(), "Patient") == []
    assert found(patient(), "Patientt") == [("invalid", "Patient.resourceType")]
    assert found("Patient", "Patient") == [("invalid", "Patient")]


def test_diagnostics_name_the_element_and_expected_type():
    [issue] = validate_resource(patient(active="yes"))
    assert "'active'" in issue.diagnostics and "expected boolean" in issue.diagnostics
    [issue] = validate_resource(patient(gender="mal"))
    assert "female, male, other, unknown" in issue.diagnostics
    [issue] = validate_resource(patient(nickname="Jim"))
    assert issue.diagnostics == "Unknown element 'nickname'"


def test_diagnostics_never_contain_the_submitted_values():
    secret = "Zzyzx-SECRET"
    resource = {
        "resourceType": "Patient",
        "id": f"{secret} 1",
        "active": secret,
        "gender": secret,
        "birthDate": secret,
        "language": f"{secret}  x",
        "implicitRules": f"{secret} x",
        "name": [{"family": {"text": secret}, "given": [secret, 7], "use": secret}],
        "telecom": [{"rank": secret}, {"rank": -1}],
        "photo": [{"data": secret, "url": [secret]}],
        "maritalStatus": secret,
        "extension": [{"url": "http://example.org/x", "valueInteger": secret, "valueUuid": secret}],
        "contained": [{"resourceType": secret}, secret],
        "text": {"status": secret, "div": secret},
        "deceasedBoolean": secret,
        "deceasedDateTime": secret,
    }
    issues = validate_resource(resource) + validate_resource({"resourceType": secret}, secret)
    assert len(issues) == 25  # every bad value above is reported
    for issue in issues:
        assert secret not in issue.diagnostics and secret not in issue.expression, issue


def test_issues_stop_at_the_limit():
    resource = patient(**{f"unknown{n}": n for n in range(MAX_ISSUES * 2)})
    assert len(validate_resource(resource)) == MAX_ISSUES


def test_long_unknown_names_are_cut_short():
    [issue] = validate_resource(patient(**{"x" * 10_000: 1}))
    assert len(issue.diagnostics) < 100 and len(issue.expression) < 100


def test_deep_nesting_is_an_issue_not_an_exception():
    extension: dict = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(10_000):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    assert found(patient(extension=[extension])) == [("structure", "Patient")]


def test_oversized_string_is_rejected():
    text = "é" * (1024 * 1024 // 2 + 1)  # 2 bytes each in UTF-8: just over 1 MiB
    assert found(patient(name=[{"text": text}])) == [("value", "Patient.name[0].text")]
    assert found(patient(name=[{"text": text[:-1]}])) == []


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1.5, "", "x", [], {}, [None], [[]], [{}], {"": None}, {"a": [1, {"b": None}]}],
    ids=repr,
)
def test_any_json_anywhere_gives_issues_not_exceptions(value):
    names = ["id", "meta", "text", "contained", "extension", "name", "_given", "valueQuantity", "resource"]
    for name in names:
        assert isinstance(validate_resource(patient(**{name: value})), list)
        assert isinstance(validate_resource(observation(**{name: value})), list)
        assert isinstance(validate_resource({"resourceType": "Bundle", "entry": [{name: value}]}), list)
    assert isinstance(validate_resource(value), list)
