"""FHIR operations ($name), one module each."""
