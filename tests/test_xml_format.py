"""FHIR R4 XML <-> JSON conversion (fhirserver.formats.xml): round trips over Synthea bundles,
hand-written XML against the JSON it must produce, definition order, and refusals whose
messages never echo document values."""

from __future__ import annotations

import gzip
import json
import sys
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest

from fhirserver.formats.xml import XmlFormatError, resource_to_xml, xml_to_resource

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
BUNDLES = [
    *sorted((SYNTHEA / "smart-synthea-2019").glob("*.json.gz")),
    *(
        SYNTHEA / "blaze-synthea-2021" / name
        for name in (
            "0-hospitalInformation1625911868739.json.gz",
            "19625ee6-1a94-1a6a-ca95-40c4efbbdfc7.json.gz",
            "1363ed76-25b9-dc4f-6de7-6ee133d82db3.json.gz",
        )
    ),
]
FHIR = "{http://hl7.org/fhir}"
SECRET = "SECRET-4711"  # stands in for patient data that must never reach an error message
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def fhir_xml(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode()


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea data not present")
@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name[:24])
def test_synthea_bundle_and_every_entry_round_trip(path):
    bundle = json.loads(gzip.decompress(path.read_bytes()))
    assert xml_to_resource(resource_to_xml(bundle)) == bundle
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert xml_to_resource(resource_to_xml(resource, pretty=True)) == resource, resource["id"]


def test_patient_with_primitive_extensions_narrative_and_contained():
    xml = fhir_xml(
        """<!-- comments are not content -->
<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://hl7.org/fhir patient.xsd">
  <id value="p1"/>
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"
         xml:lang="en"><p class="n">Jane <b>Doe</b> &amp; co<br/></p></div>
  </text>
  <contained>
    <Organization>
      <id value="org1"/>
      <name value="Clinic"/>
    </Organization>
  </contained>
  <extension url="http://example.org/score">
    <valueDecimal value="1.50"/>
  </extension>
  <active value="true"/>
  <name id="n1">
    <family value="Doe"/>
    <given value="Jane"/>
    <given id="g2">
      <extension url="http://hl7.org/fhir/StructureDefinition/data-absent-reason">
        <valueCode value="unknown"/>
      </extension>
    </given>
  </name>
  <birthDate value="1970-01-01">
    <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
      <valueString value="x"/>
    </extension>
  </birthDate>
  <multipleBirthInteger value="2"/>
  <managingOrganization>
    <reference value="#org1"/>
  </managingOrganization>
</Patient>
"""
    )
    assert xml_to_resource(xml) == {
        "resourceType": "Patient",
        "id": "p1",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml" xml:lang="en">'
            '<p class="n">Jane <b>Doe</b> &amp; co<br/></p></div>',
        },
        "contained": [{"resourceType": "Organization", "id": "org1", "name": "Clinic"}],
        "extension": [{"url": "http://example.org/score", "valueDecimal": 1.5}],
        "active": True,
        "name": [
            {
                "id": "n1",
                "family": "Doe",
                "given": ["Jane", None],
                "_given": [
                    None,
                    {"id": "g2", "extension": [{"url": DATA_ABSENT, "valueCode": "unknown"}]},
                ],
            }
        ],
        "birthDate": "1970-01-01",
        "_birthDate": {
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueString": "x"}
            ]
        },
        "multipleBirthInteger": 2,
        "managingOrganization": {"reference": "#org1"},
    }


def test_primitive_array_with_only_extensions_has_no_value_array():
    resource = {
        "resourceType": "Patient",
        "name": [{"_given": [{"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}]}],
    }
    xml = resource_to_xml(resource)
    assert b'<given><extension url="' + DATA_ABSENT.encode() in xml
    assert xml_to_resource(xml) == resource


def test_bundle_entry_resource_and_typed_values():
    xml = fhir_xml(
        """<Bundle xmlns="http://hl7.org/fhir">
  <type value="collection"/>
  <entry id="e1">
    <fullUrl value="urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"/>
    <resource>
      <Observation>
        <status value="final"/>
        <code><text value="vitals"/></code>
        <valueQuantity><value value="72"/><unit value="/min"/></valueQuantity>
        <component>
          <code><text value="count"/></code>
          <valueInteger value="-3"/>
        </component>
        <component>
          <code><text value="flag"/></code>
          <valueBoolean value="false"/>
        </component>
        <component>
          <code><text value="temperature"/></code>
          <valueQuantity><value value="36.60"/></valueQuantity>
        </component>
        <component>
          <code><text value="tiny"/></code>
          <valueQuantity><value value="1.5e-3"/></valueQuantity>
        </component>
      </Observation>
    </resource>
  </entry>
</Bundle>"""
    )
    components = [
        {"code": {"text": "count"}, "valueInteger": -3},
        {"code": {"text": "flag"}, "valueBoolean": False},
        {"code": {"text": "temperature"}, "valueQuantity": {"value": 36.6}},
        {"code": {"text": "tiny"}, "valueQuantity": {"value": 0.0015}},
    ]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "vitals"},
        "valueQuantity": {"value": 72, "unit": "/min"},
        "component": components,
    }
    assert xml_to_resource(xml) == {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"id": "e1", "fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "resource": observation}
        ],
    }
    value = xml_to_resource(xml)["entry"][0]["resource"]["valueQuantity"]["value"]
    assert type(value) is int


def test_decimal_precision_is_kept_with_parse_decimal():
    xml = fhir_xml(
        '<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="t"/></code>'
        '<valueQuantity><value value="36.60"/></valueQuantity></Observation>'
    )
    resource = xml_to_resource(xml, parse_decimal=Decimal)
    assert str(resource["valueQuantity"]["value"]) == "36.60"
    assert b'<value value="36.60"/>' in resource_to_xml(resource)


def test_output_follows_definition_order_not_dict_order():
    resource = {
        "birthDate": "1970-01-01",
        "_birthDate": {"id": "b1"},
        "name": [{"given": ["Ann"], "family": "Lee", "use": "official"}],
        "identifier": [{"value": "123", "system": "urn:x"}],
        "gender": "female",
        "text": {"div": '<div xmlns="http://www.w3.org/1999/xhtml">Ann</div>', "status": "generated"},
        "meta": {"versionId": "1"},
        "id": "p1",
        "resourceType": "Patient",
    }
    root = ET.fromstring(resource_to_xml(resource))
    assert root.tag == FHIR + "Patient"
    assert [child.tag.removeprefix(FHIR) for child in root] == [
        "id",
        "meta",
        "text",
        "identifier",
        "name",
        "gender",
        "birthDate",
    ]
    assert [child.tag.removeprefix(FHIR) for child in root.find(FHIR + "name")] == ["use", "family", "given"]
    assert root.find(FHIR + "id").get("value") == "p1"
    assert root.find(FHIR + "birthDate").attrib == {"id": "b1", "value": "1970-01-01"}


def test_declaration_attributes_and_pretty_output():
    resource = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "id": "e1",
                "resource": {
                    "resourceType": "Patient",
                    "extension": [{"url": "http://example.org/x", "valueBoolean": True}],
                },
            }
        ],
    }
    pretty = resource_to_xml(resource, pretty=True)
    assert pretty.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Bundle xmlns="http://hl7.org/fhir">')
    assert b'\n  <entry id="e1">\n    <resource>\n      <Patient>\n' in pretty
    assert b'<extension url="http://example.org/x">' in pretty
    assert xml_to_resource(pretty) == resource
    assert b"\n" not in resource_to_xml(resource).split(b"?>", 1)[1]


def test_awkward_characters_survive_a_round_trip():
    text = "a & b < c > d \"quoted\" 'single'\nline two\r\n\ttabbed \u00e9\u4e2d\U0001f600"
    resource = {
        "resourceType": "Patient",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p title="x &amp; &quot;y&quot;">'
            "1 &lt; 2 &amp;&amp; 3 &gt; 2\u00a0\u00e9</p></div>",
        },
        "name": [{"text": text, "given": [text]}],
    }
    xml = resource_to_xml(resource)
    assert xml.decode("utf-8")
    assert xml_to_resource(xml) == resource


def test_byte_order_mark_and_misleading_encoding_declaration_are_read_as_utf8():
    body = '<Patient xmlns="http://hl7.org/fhir"><gender value="f\u00e9male"/></Patient>'
    declared = f'<?xml version="1.0" encoding="ISO-8859-1"?>{body}'.encode()
    assert xml_to_resource(declared)["gender"] == "f\u00e9male"
    assert xml_to_resource(b"\xef\xbb\xbf" + body.encode())["gender"] == "f\u00e9male"


PATIENT = '<Patient xmlns="http://hl7.org/fhir">{}</Patient>'


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (f'<Patient xmlns="http://hl7.org/fhir"><id value="{SECRET}"/>', "not well-formed"),
        (
            f'<!DOCTYPE Patient [<!ENTITY x "{SECRET}">]>' + PATIENT.format('<id value="&x;"/>'),
            "DOCTYPE",
        ),
        (
            '<!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + PATIENT.format('<id value="&x;"/>'),
            "DOCTYPE",
        ),
        (PATIENT.format(f'<id value="&undefined;{SECRET}"/>'), "not well-formed"),
        (
            PATIENT.format(f'<favouriteColour value="{SECRET}"/>'),
            "Patient: unknown element 'favouriteColour'",
        ),
        (PATIENT.format(f'<gender xmlns="urn:other" value="{SECRET}"/>'), "namespace 'urn:other'"),
        (PATIENT.format(f'<text><status value="generated"/><div value="{SECRET}"/></text>'), "Patient.text"),
        (f'<Patient><id value="{SECRET}"/></Patient>', "no namespace"),
        (f'<Patient xmlns="http://hl7.org/fhir/x"><id value="{SECRET}"/></Patient>', "namespace"),
        (f'<Nonsense xmlns="http://hl7.org/fhir"><id value="{SECRET}"/></Nonsense>', "not an R4 resource"),
        (f'<DomainResource xmlns="http://hl7.org/fhir"><id value="{SECRET}"/></DomainResource>', "R4"),
        (PATIENT.format(f'<active value="{SECRET}"/>'), "Patient.active: the value is not a valid boolean"),
        (PATIENT.format(f'<multipleBirthInteger value="{SECRET}"/>'), "Patient.multipleBirthInteger"),
        (PATIENT.format(f'<gender value="{SECRET}"/><gender value="male"/>'), "must not repeat"),
        (
            PATIENT.format(f'<deceasedBoolean value="true"/><deceasedDateTime value="{SECRET}"/>'),
            "choice",
        ),
        (PATIENT.format(f'<gender value="male">{SECRET}</gender>'), "Patient.gender: text content"),
        (PATIENT.format(f'<gender value="male" colour="{SECRET}"/>'), "unexpected attribute 'colour'"),
        (PATIENT.format(f'<name><family id="{SECRET}"/><id value="x"/></name>'), "Patient.name[0]"),
        (PATIENT.format(f'<name><family value="{SECRET}"><given value="x"/></family></name>'), "family"),
        (PATIENT.format("<gender/>"), "Patient.gender: the element has neither a value nor extensions"),
        (
            '<Bundle xmlns="http://hl7.org/fhir"><entry><resource><Patient>'
            f'<nickname value="{SECRET}"/></Patient></resource></entry></Bundle>',
            "Bundle.entry[0].resource: unknown element 'nickname'",
        ),
        (
            '<Bundle xmlns="http://hl7.org/fhir"><entry><resource>'
            f'<Patient><id value="{SECRET}"/></Patient><Patient/></resource></entry></Bundle>',
            "exactly one resource",
        ),
    ],
)
def test_invalid_xml_is_refused_without_echoing_values(document, expected):
    with pytest.raises(XmlFormatError) as caught:
        xml_to_resource(document.encode())
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)


def test_non_utf8_document_is_refused():
    with pytest.raises(XmlFormatError, match="not UTF-8"):
        xml_to_resource(PATIENT.format('<gender value="f\xe9male"/>').encode("latin-1"))


def narrative(div: str) -> dict:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": div}}


XHTML_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (
            {"resourceType": "Patient", "favouriteColour": SECRET},
            "Patient: unknown property 'favouriteColour'",
        ),
        ({"resourceType": "Patient", "_favouriteColour": {"id": SECRET}}, "'_favouriteColour'"),
        ({"resourceType": "Nonsense", "id": SECRET}, "not an R4 resource type"),
        ({"id": SECRET}, "resourceType is missing"),
        (
            {"resourceType": "Patient", "active": SECRET},
            "Patient.active: expected a JSON value of FHIR type boolean",
        ),
        ({"resourceType": "Patient", "multipleBirthInteger": 2.5}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "name": {"family": SECRET}}, "Patient.name: expected a JSON array"),
        ({"resourceType": "Patient", "name": [{"family": [SECRET]}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "name": [SECRET]}, "Patient.name[0]: expected a JSON object"),
        ({"resourceType": "Patient", "gender": "male", "_gender": {"value": SECRET}}, "id and extension"),
        ({"resourceType": "Patient", "_name": [{"id": SECRET}]}, "only primitive"),
        (
            {"resourceType": "Patient", "name": [{"given": [SECRET, "b"], "_given": [None]}]},
            "Patient.name[0].given: the value and '_' arrays differ in length",
        ),
        ({"resourceType": "Patient", "name": [{"given": [None]}]}, "Patient.name[0].given[0]: null"),
        (
            {"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": SECRET},
            "more than one type",
        ),
        ({"resourceType": "Patient", "name": [{"family": SECRET + "\x00"}]}, "Patient.name[0].family"),
        (
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "x": SECRET}}]},
            "Bundle.entry[0].resource: unknown property 'x'",
        ),
        (
            # R4 types outcome as any Resource, but SubscriptionStatus is R4B's.
            {
                "resourceType": "Bundle",
                "entry": [{"response": {"outcome": {"resourceType": "SubscriptionStatus"}}}],
            },
            "Bundle.entry[0].response.outcome: resourceType is missing or not an R4 resource type",
        ),
        (narrative(f"<p>{SECRET}</p>"), "Patient.text.div: the narrative must be a single XHTML div"),
        (narrative(f"<div>{SECRET}</div>"), "XHTML div"),
        (narrative(XHTML_DIV.format(f"<p>{SECRET}")), "Patient.text.div is not well-formed XML"),
        (narrative(f'<!DOCTYPE div [<!ENTITY x "{SECRET}">]>' + XHTML_DIV.format("&x;")), "DOCTYPE"),
        (narrative(XHTML_DIV.format(f'<svg xmlns="http://www.w3.org/2000/svg">{SECRET}</svg>')), "XHTML"),
        (narrative(["not", SECRET]), "Patient.text.div: expected the narrative XHTML as a string"),
    ],
)
def test_unconvertible_json_is_refused_without_echoing_values(resource, expected):
    with pytest.raises(XmlFormatError) as caught:
        resource_to_xml(resource)
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)


def test_absurd_nesting_is_refused_not_crashing():
    extension: dict = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(sys.getrecursionlimit()):
        extension = {"url": "http://example.org/n", "extension": [extension]}
    with pytest.raises(XmlFormatError, match="nested too deeply"):
        resource_to_xml({"resourceType": "Patient", "extension": [extension]})
    depth = sys.getrecursionlimit()
    body = '<extension url="u">' * depth + '<valueString value="x"/>' + "</extension>" * depth
    with pytest.raises(XmlFormatError, match="nested too deeply"):
        xml_to_resource(PATIENT.format(body).encode())
