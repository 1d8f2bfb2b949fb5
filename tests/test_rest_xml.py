"""XML in and out over HTTP (http://hl7.org/fhir/R4/xml.html)."""

import xml.etree.ElementTree as ET

FHIR_NS = "{http://hl7.org/fhir}"
PATIENT_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <name><family value="Xmlson"/><given value="Ann"/></name>
  <gender value="female"/>
  <birthDate value="1980-02-03"/>
</Patient>"""


def test_create_from_xml_and_read_as_xml(fhir):
    response = fhir.post("/Patient", content=PATIENT_XML, headers={"Content-Type": "application/fhir+xml"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"][0]["family"] == "Xmlson"
    assert created["birthDate"] == "1980-02-03"

    as_xml = fhir.get(f"/Patient/{created['id']}", params={"_format": "xml"})
    assert as_xml.headers["content-type"].startswith("application/fhir+xml")
    root = ET.fromstring(as_xml.content)
    assert root.tag == f"{FHIR_NS}Patient"
    assert root.find(f"{FHIR_NS}id").get("value") == created["id"]
    assert root.find(f"{FHIR_NS}gender").get("value") == "female"

    by_accept = fhir.get(f"/Patient/{created['id']}", headers={"Accept": "application/fhir+xml"})
    assert by_accept.content == as_xml.content


def test_malformed_xml_is_400_outcome(fhir):
    response = fhir.post(
        "/Patient",
        content=b"<Patient xmlns='http://hl7.org/fhir'><name>",
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_errors_come_back_as_xml_when_asked(fhir):
    response = fhir.get("/Patient/does-not-exist", params={"_format": "xml"})
    assert response.status_code == 404
    assert ET.fromstring(response.content).tag == f"{FHIR_NS}OperationOutcome"


def test_unsupported_format_is_406(fhir):
    response = fhir.get("/metadata", params={"_format": "text/turtle"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"
