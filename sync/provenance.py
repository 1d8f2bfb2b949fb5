"""Local ids of imported resources, and the Provenance written for each imported version.

Ids are deterministic: uuid5 of provider + type + provider id for a resource, so two providers
never collide and a re-sync meets the same ids; uuid5 of its targets for a Provenance.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sync.models import Provider

if TYPE_CHECKING:
    from sync.importer import Prepared

NAMESPACE = uuid.UUID("6f1c1a8e-4a57-4e0c-9a51-1d3c2f6b5e01")  # of sync's local ids; never change
# Provenance codes: R4 provenance-participant-type `author` (US Core Provenance's mandatory
# ProvenanceAuthor slice) and US Core's `transmitter`, "the entity that provided the copy to your
# system" (US Core, Basic Provenance: the 'last hop'); R4 v3-DataOperation for the activity.
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
US_CORE_PARTICIPANT_TYPE = "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
ENTITY_ROLE_SOURCE = "source"  # R4 provenance-entity-role: "the primary source of the data"
# One extension per normalisation change (the version, the element removed, why); Extension.url
# may be a logical name.
NORMALISATION_EXTENSION = "urn:fhirserver:sync:normalisation"


def local_id(provider_id: object, kind: str, ident: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{provider_id}/{kind}/{ident}"))


def provenance(written: list[tuple[Prepared, int]], created: bool, provider: Provider, recorded: str) -> dict:
    """The Provenance of the versions one batch of an import wrote (R4 provenance.html; its
    `target` is 1..*, so one record covers a batch instead of one per version, which halved
    what an import writes): `target` the versioned references, `recorded` the import,
    `activity` CREATE or UPDATE, the provider as `author` and `transmitter` agent (who: its
    name, its FHIR base as identifier), the provider's URL of each resource as a `source`
    entity, and what normalisation removed as extensions naming the version they concern. The
    id is uuid5 of the targets: the same versions, the same id."""
    provider_ref = {
        "type": "Organization",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": provider.base_url},
        "display": provider.name,
    }
    targets = [f"{item.key[0]}/{item.local}/_history/{version}" for item, version in written]
    resource = {
        "resourceType": "Provenance",
        "id": str(uuid.uuid5(NAMESPACE, "provenance/" + "\n".join(sorted(targets)))),
        "target": [{"reference": target} for target in targets],
        "recorded": recorded,
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE" if created else "UPDATE"}]},
        "agent": [
            {"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]}, "who": provider_ref},
            {
                "type": {"coding": [{"system": US_CORE_PARTICIPANT_TYPE, "code": "transmitter"}]},
                "who": provider_ref,
            },
        ],
        "entity": [
            {
                "role": ENTITY_ROLE_SOURCE,
                "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": source}, "display": source},
            }
            for source in (item.resource["meta"]["source"] for item, _ in written)
        ],
    }
    changes = [
        {
            "url": NORMALISATION_EXTENSION,
            "extension": [
                {"url": "target", "valueReference": {"reference": target}},
                {"url": "element", "valueString": str(change["element"])},
                {"url": "reason", "valueString": str(change["reason"])},
            ],
        }
        for (item, _), target in zip(written, targets, strict=True)
        for change in item.changes
    ]
    if changes:
        resource["extension"] = changes
    return resource
