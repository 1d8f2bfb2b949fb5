"""Local ids of imported resources, and the Provenance written for each imported version.

Ids are deterministic: uuid5 of provider + type + provider id for a resource, so two providers
never collide and a re-sync meets the same ids; uuid5 of the local resource and version for its
Provenance, so the same version always has the same Provenance.
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
# One extension per normalisation change (element removed, why); Extension.url may be a logical name.
NORMALISATION_EXTENSION = "urn:fhirserver:sync:normalisation"


def local_id(provider_id: object, kind: str, ident: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{provider_id}/{kind}/{ident}"))


def provenance_id(kind: str, ident: str, version: int) -> str:
    """The id of the Provenance of one local resource version: the same version, the same id."""
    return str(uuid.uuid5(NAMESPACE, f"provenance/{kind}/{ident}/{version}"))


def provenance(item: Prepared, version: int, created: bool, provider: Provider, recorded: str) -> dict:
    """The Provenance of one imported version (R4 provenance.html): `target` the versioned
    reference, `recorded` the import, `activity` CREATE or UPDATE, the provider as `author` and
    `transmitter` agent (who: its name, its FHIR base as identifier), the provider's URL of the
    resource as `source` entity, and what normalisation removed as extensions."""
    kind = item.key[0]
    provider_ref = {
        "type": "Organization",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": provider.base_url},
        "display": provider.name,
    }
    source = item.resource["meta"]["source"]
    resource = {
        "resourceType": "Provenance",
        "id": provenance_id(kind, item.local, version),
        "target": [{"reference": f"{kind}/{item.local}/_history/{version}"}],
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
        ],
    }
    if item.changes:
        resource["extension"] = [
            {
                "url": NORMALISATION_EXTENSION,
                "extension": [
                    {"url": "element", "valueString": str(change["element"])},
                    {"url": "reason", "valueString": str(change["reason"])},
                ],
            }
            for change in item.changes
        ]
    return resource
