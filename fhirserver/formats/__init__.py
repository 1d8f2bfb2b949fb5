"""Wire formats of FHIR resources other than the JSON the server stores (XML: formats.xml)."""
