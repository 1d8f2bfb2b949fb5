"""The data the provider simulator (sync.simulator) serves: Synthea patients from ../shared/data.

`Dataset.load` reads the bundles of some patients and the shared Organization/Location/
Practitioner bundles, resolves `urn:uuid:` and conditional references to `Type/id` (a reference
that does not resolve keeps only its display) and can prefix every id, which is how two
simulators are made to collide or not.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
SHARED_BUNDLES = (
    "blaze-synthea-2021/0-hospitalInformation1625911868739.json.gz",
    "blaze-synthea-2021/0-practitionerInformation1625911868739.json.gz",
    # the three targets the heaviest patient's references need (data README, quirk 3)
    "blaze-big-tx/0-missing-targets-1.json.gz",
    "blaze-big-tx/0-missing-targets-2.json.gz",
)
LIGHT_PATIENTS = ("8a4c9c04-1524-9f1c-d65b-9b17e4520fef", "8708d3e1-f718-96bb-03f0-f2a6564ae1cd")


@dataclass
class Dataset:
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    patient_of: dict[tuple[str, str], str] = field(default_factory=dict)
    by_patient: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, patients: tuple[str, ...] = LIGHT_PATIENTS, id_prefix: str = "") -> Dataset:
        """The Synthea bundles of `patients` (ids) and the shared bundles, with `urn:uuid:` and
        conditional references resolved to `Type/id` (unresolvable ones keep only their display)."""
        data = cls()
        entries: list[tuple[dict, str | None]] = []
        for name in SHARED_BUNDLES:  # entries without an id take the one in their urn:uuid fullUrl
            entries += [
                ({"id": e["fullUrl"].rsplit(":", 1)[-1], **e["resource"]}, None)
                for e in _bundle(SYNTHEA / name)["entry"]
            ]
        for patient in patients:
            (path,) = SYNTHEA.glob(f"*/*{patient}.json.gz")
            entries += [(e["resource"], patient) for e in _bundle(path)["entry"]]
        types = {resource["id"]: resource["resourceType"] for resource, _ in entries}
        by_identifier = {
            f"{r['resourceType']}?identifier={i.get('system')}|{i.get('value')}": "/".join(
                (r["resourceType"], r["id"])
            )
            for r, owner in entries
            if owner is None
            for i in r.get("identifier", [])
        }

        def resolve(reference: str) -> str | None:
            if reference.startswith("urn:uuid:"):
                target = reference[9:]
                return f"{types[target]}/{target}" if target in types else None
            if "?" in reference:
                return by_identifier.get(reference)
            return reference

        for resource, owner in entries:
            resource = _rewrite(resource, resolve, id_prefix)
            key = (resource["resourceType"], resource["id"])
            data.resources[key] = resource
            if owner is not None:
                data.patient_of[key] = id_prefix + owner
                data.by_patient.setdefault(id_prefix + owner, []).append(key)
        return data

    def compartment(self, patient: str) -> list[dict]:
        return [self.resources[key] for key in self.by_patient.get(patient, ())]


def _bundle(path: Path) -> dict:
    with gzip.open(path, "rb") as handle:
        return json.load(handle)


def _rewrite(value: object, resolve, prefix: str) -> object:
    if isinstance(value, dict):
        result = {k: _rewrite(v, resolve, prefix) for k, v in value.items()}
        if isinstance(value.get("reference"), str) and not value["reference"].startswith("#"):
            target = resolve(value["reference"])
            if target is None:
                del result["reference"]
            else:
                kind, _, ident = target.partition("/")
                result["reference"] = f"{kind}/{prefix}{ident}"
        if "resourceType" in value and "id" in value:
            result["id"] = prefix + value["id"]
        return result
    if isinstance(value, list):
        return [_rewrite(item, resolve, prefix) for item in value]
    return value


def spoil(resource: dict) -> dict:
    """A slightly invalid copy, as real providers send: an empty string and a malformed date."""
    spoiled = dict(resource, language="")
    if resource["resourceType"] == "Observation":
        spoiled["issued"] = "2021-13-45T99:00:00Z"
    return spoiled
