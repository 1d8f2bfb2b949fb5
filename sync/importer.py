"""From fetched provider resources to a complete snapshot, through the one write path.

`prepare` turns what a provider sent into what the tenant stores:
- normalise: elements the validator rejects (empty strings, malformed dates, unknown elements)
  are removed and each removal recorded; a resource that stays invalid (a required element
  missing) is left out and recorded;
- ids: deterministic local ids, uuid5 of provider + type + provider id, so two providers never
  collide and a re-sync meets the same ids; the provider's URL of the resource is meta.source;
- references to fetched resources are rewritten to their local ids; others become absolute
  URLs at the provider (honest, not dangling); so are attachment URLs naming a Binary at the
  provider (`Binary/<local id>`, relative: R4 datatypes.html#Attachment reads a relative
  Attachment.url like a resource reference, and it stays true whatever URL the tenant is served
  at); attachment URLs elsewhere are kept as they are;
- a SHA-256 of the canonical prepared JSON.

`store` writes in one transaction through fhirserver.storage.repository (validated, versioned,
indexed, PHI-encrypted), and only resources whose hash differs from the version the last
complete snapshot recorded get a new version; each new version gets a Provenance (see
`provenance`), written in the same transaction; then the manifest rows (the resources' versions
and their Provenances) and the snapshot's `complete` status commit with them. Until that commit
nothing is visible; a killed run leaves its snapshot `running` with no entries, and the next
worker restarts it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import connection, transaction

from audit import trail
from audit.interactions import Interaction
from fhirserver.storage.repository import Repository, format_instant, now
from fhirserver.validation import validate_resource
from smart_auth.context import AuthContext
from sync.models import Provider, Snapshot, SnapshotEntry
from sync.strategies import Key, local_key

NAMESPACE = uuid.UUID("6f1c1a8e-4a57-4e0c-9a51-1d3c2f6b5e01")  # of sync's local ids; never change
MAX_PASSES = 5
_STEP = re.compile(r"([A-Za-z0-9_]+)(?:\[(\d+)\])?")


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


@dataclass
class Prepared:
    key: Key  # at the provider
    local: str
    resource: dict
    digest: str
    changes: list[dict] = field(default_factory=list)  # normalisation: {element, reason}


def normalise(resource: dict) -> tuple[dict | None, list[dict]]:
    """The resource without the elements the validator rejects, and what was removed; None
    when removing elements cannot make it valid."""
    kind = resource["resourceType"]
    changes: list[dict] = []
    for _ in range(MAX_PASSES):
        issues = validate_resource(resource, kind)
        if not issues:
            return resource, changes
        removed = False
        for issue in issues:
            if issue.code != "required" and _remove(resource, issue.expression, kind):
                changes.append({"element": issue.expression, "reason": issue.diagnostics})
                removed = True
        _prune(resource)
        if not removed:
            break
    reasons = [issue.diagnostics for issue in validate_resource(resource, kind)][:3]
    return None, [*changes, {"element": kind, "reason": "left out, still invalid: " + "; ".join(reasons)}]


def _remove(resource: dict, expression: str | None, kind: str) -> bool:
    """Delete the element at a validator expression (`Observation.note[0].text`)."""
    if not expression or not expression.startswith(kind + "."):
        return False
    steps = [(m.group(1), m.group(2)) for m in _STEP.finditer(expression[len(kind) + 1 :])]
    parent: object = resource
    for name, index in steps[:-1]:
        parent = parent.get(name) if isinstance(parent, dict) else None
        if index is not None:
            parent = parent[int(index)] if isinstance(parent, list) and int(index) < len(parent) else None
    name, index = steps[-1] if steps else (None, None)
    if not isinstance(parent, dict) or name not in parent:
        return False
    if index is None:
        del parent[name]
    elif isinstance(parent[name], list) and int(index) < len(parent[name]):
        parent[name][int(index)] = None  # pruned below, so other indexes stay right meanwhile
    else:
        del parent[name]
    return True


def _prune(value: object) -> object:
    """Drop None, empty objects and empty arrays left behind by removals."""
    if isinstance(value, dict):
        for name in list(value):
            value[name] = _prune(value[name])
            if value[name] in (None, {}, []):
                del value[name]
    elif isinstance(value, list):
        value[:] = [item for item in (_prune(item) for item in value) if item not in (None, {}, [])]
    return value


def prepare(provider_id: object, base_url: str, found: dict[Key, dict]) -> tuple[list[Prepared], list[dict]]:
    """The resources to store (sorted by key) and every normalisation change, per resource."""
    kept: dict[Key, dict] = {}
    changes: list[dict] = []
    changed_by_key: dict[Key, list[dict]] = {}
    for key, original in sorted(found.items()):
        resource, changed = normalise(orjson.loads(orjson.dumps(original)))
        local = f"{key[0]}/{local_id(provider_id, *key)}"
        changes += [{"resource": local, **change} for change in changed]
        if resource is not None:
            kept[key] = resource
            changed_by_key[key] = changed
    ids = {key: local_id(provider_id, *key) for key in kept}

    def rewrite(value: dict | list) -> None:
        """In place: the resources are this function's own copies (normalise got a copy)."""
        if isinstance(value, dict):
            reference = value.get("reference")
            target = local_key(reference, base_url) if isinstance(reference, str) else None
            if target is not None:
                value["reference"] = (
                    f"{target[0]}/{ids[target]}" if target in ids else f"{base_url}/{target[0]}/{target[1]}"
                )
            url = value.get("url")
            binary = local_key(url, base_url) if isinstance(url, str) else None
            if binary is not None and binary[0] == "Binary":
                value["url"] = f"Binary/{ids[binary]}" if binary in ids else f"{base_url}/Binary/{binary[1]}"
            items = value.values()
        else:
            items = value
        for item in items:
            if isinstance(item, dict | list):
                rewrite(item)

    prepared = []
    for key, resource in kept.items():
        rewrite(resource)
        meta = {
            k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
        }
        resource = {**resource, "id": ids[key], "meta": {**meta, "source": f"{base_url}/{key[0]}/{key[1]}"}}
        digest = _digest(resource)
        prepared.append(Prepared(key, ids[key], resource, digest, changed_by_key[key]))
    return prepared, changes


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


def store(snapshot: Snapshot, prepared: list[Prepared]) -> int:
    """Write what changed and the manifest, and complete the snapshot, all in one transaction.
    Returns the number of new versions written."""
    written = 0
    provider = snapshot.patient.provider
    recorded = format_instant(now())
    with transaction.atomic():
        with connection.cursor() as cursor:  # one import per link at a time
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"sync:{snapshot.patient_id}"]
            )
        local_keys = [(item.key[0], item.local) for item in prepared]
        current, previous = _current_versions(local_keys), _previous_hashes(local_keys)
        # (type, id, version, hash) of the manifest: the resources, then their Provenances
        manifest: list[tuple[str, str, int, str]] = []
        provenances: list[tuple[str, str, int, str]] = []
        reused: list[tuple[str, str]] = []  # Provenance keys of versions a run before wrote
        with Repository.buffered() as repository:
            for item in prepared:
                kind = item.key[0]
                present = current.get((kind, item.local))
                unchanged = (
                    previous.get((kind, item.local)) == (present[0], item.digest) if present else False
                )
                if present is not None and not present[1] and unchanged:
                    manifest.append((kind, item.local, present[0], item.digest))
                    reused.append(("Provenance", provenance_id(kind, item.local, present[0])))
                    continue
                if present is None:
                    stored = repository.create(item.resource, item.local)
                else:
                    stored, _ = repository.update(kind, item.local, item.resource)
                manifest.append((kind, item.local, stored.version_id, item.digest))
                record = provenance(
                    item, stored.version_id, present is None or present[1], provider, recorded
                )
                repository.create(record, record["id"])
                provenances.append(("Provenance", record["id"], 1, _digest(record)))
                written += 2
        # a reused version's Provenance is in the manifest as the snapshot that wrote it had it
        earlier = _previous_hashes(reused)
        provenances += [(*key, *earlier[key]) for key in reused if key in earlier]
        SnapshotEntry.objects.bulk_create(
            [
                SnapshotEntry(
                    snapshot=snapshot,
                    resource_type=kind,
                    resource_id=ident,
                    version_id=version,
                    content_hash=digest,
                )
                for kind, ident, version, digest in manifest + provenances
            ],
            batch_size=1000,
        )
        counts: dict[str, int] = {}
        for kind, *_ in manifest + provenances:
            counts[kind] = counts.get(kind, 0) + 1
        snapshot.status, snapshot.counts, snapshot.written = Snapshot.Status.COMPLETE, counts, written
        snapshot.finished = now()
        snapshot.save()
        _audit(snapshot, prepared, written)
    return written


def _audit(snapshot: Snapshot, prepared: list[Prepared], written: int) -> None:
    """One AuditEvent per stored snapshot (operation $sync, action C, on the local Patient),
    committed with it; the manifest lists every resource, so the event names the snapshot."""
    if not settings.AUDIT_ENABLED:
        return
    link = snapshot.patient
    patient = next(
        (item.local for item in prepared if item.key == ("Patient", link.provider_patient_id)), None
    )
    interaction = Interaction(
        subtype="operation", action="C", resource_type="Patient", operation="sync",
        query=f"snapshot={snapshot.id}&resources={len(prepared)}&written={written}",
    )  # fmt: skip
    agent = AuthContext(user=None, client_id=f"sync:{link.provider.name}")
    patients, references = ({patient}, [f"Patient/{patient}"]) if patient else (set(), [])
    trail.record_job(connection.tenant.slug, interaction, agent, patients, references, str(snapshot.id))


def _digest(resource: dict) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _keys(keys: list[Key]) -> list[list[str]]:
    """Local types and ids as two arrays, for `(type, id) IN (SELECT * FROM unnest(..))`: the
    primary key (and the manifest's index) then serve the look-up."""
    return [[kind for kind, _ in keys], [ident for _, ident in keys]]


def _current_versions(keys: list[Key]) -> dict[Key, tuple[int, bool]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT resource_type, resource_id, version_id, deleted FROM fhir_resource"
            " WHERE (resource_type, resource_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            _keys(keys),
        )
        return {(row[0], row[1]): (row[2], row[3]) for row in cursor.fetchall()}


def _previous_hashes(keys: list[Key]) -> dict[Key, tuple[int, str]]:
    """(version, hash) each resource had in the latest complete snapshot that holds it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (e.resource_type, e.resource_id) e.resource_type, e.resource_id,"
            " e.version_id, e.content_hash FROM sync_snapshot_entry e"
            " JOIN sync_snapshot s ON s.id = e.snapshot_id AND s.status = 'complete'"
            " WHERE (e.resource_type, e.resource_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY e.resource_type, e.resource_id, s.finished DESC",
            _keys(keys),
        )
        return {(row[0], row[1]): (row[2], row[3]) for row in cursor.fetchall()}
