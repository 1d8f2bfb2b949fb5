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
complete snapshot recorded get a new version; then the manifest rows and the snapshot's
`complete` status commit with them. Until that commit nothing is visible; a killed run leaves
its snapshot `running` with no entries, and the next worker restarts it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import connection, transaction

from audit import trail
from audit.interactions import Interaction
from fhirserver.storage.repository import Repository, now
from fhirserver.validation import validate_resource
from smart_auth.context import AuthContext
from sync.models import Snapshot, SnapshotEntry
from sync.strategies import Key, local_key

NAMESPACE = uuid.UUID("6f1c1a8e-4a57-4e0c-9a51-1d3c2f6b5e01")  # of sync's local ids; never change
MAX_PASSES = 5
_STEP = re.compile(r"([A-Za-z0-9_]+)(?:\[(\d+)\])?")


def local_id(provider_id: object, kind: str, ident: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{provider_id}/{kind}/{ident}"))


@dataclass
class Prepared:
    key: Key  # at the provider
    local: str
    resource: dict
    digest: str


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
    for key, original in sorted(found.items()):
        resource, changed = normalise(orjson.loads(orjson.dumps(original)))
        local = f"{key[0]}/{local_id(provider_id, *key)}"
        changes += [{"resource": local, **change} for change in changed]
        if resource is not None:
            kept[key] = resource
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
        digest = hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
        prepared.append(Prepared(key, ids[key], resource, digest))
    return prepared, changes


def store(snapshot: Snapshot, prepared: list[Prepared]) -> int:
    """Write what changed and the manifest, and complete the snapshot, all in one transaction.
    Returns the number of new versions written."""
    written = 0
    with transaction.atomic():
        with connection.cursor() as cursor:  # one import per link at a time
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"sync:{snapshot.patient_id}"]
            )
        current, previous = _current_versions(prepared), _previous_hashes(prepared)
        versions: list[int] = []
        with Repository.buffered() as repository:
            for item in prepared:
                kind = item.key[0]
                present = current.get((kind, item.local))
                unchanged = (
                    previous.get((kind, item.local)) == (present[0], item.digest) if present else False
                )
                if present is not None and not present[1] and unchanged:
                    versions.append(present[0])
                    continue
                if present is None:
                    stored = repository.create(item.resource, item.local)
                else:
                    stored, _ = repository.update(kind, item.local, item.resource)
                versions.append(stored.version_id)
                written += 1
        SnapshotEntry.objects.bulk_create(
            [
                SnapshotEntry(
                    snapshot=snapshot,
                    resource_type=item.key[0],
                    resource_id=item.local,
                    version_id=version,
                    content_hash=item.digest,
                )
                for item, version in zip(prepared, versions, strict=True)
            ],
            batch_size=1000,
        )
        counts: dict[str, int] = {}
        for item in prepared:
            counts[item.key[0]] = counts.get(item.key[0], 0) + 1
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


def _keys(prepared: list[Prepared]) -> list[list[str]]:
    """Types and ids as two arrays, for `(type, id) IN (SELECT * FROM unnest(..))`: the
    primary key (and the manifest's index) then serve the look-up."""
    return [[item.key[0] for item in prepared], [item.local for item in prepared]]


def _current_versions(prepared: list[Prepared]) -> dict[Key, tuple[int, bool]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT resource_type, resource_id, version_id, deleted FROM fhir_resource"
            " WHERE (resource_type, resource_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            _keys(prepared),
        )
        return {(row[0], row[1]): (row[2], row[3]) for row in cursor.fetchall()}


def _previous_hashes(prepared: list[Prepared]) -> dict[Key, tuple[int, str]]:
    """(version, hash) each resource had in the latest complete snapshot that holds it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (e.resource_type, e.resource_id) e.resource_type, e.resource_id,"
            " e.version_id, e.content_hash FROM sync_snapshot_entry e"
            " JOIN sync_snapshot s ON s.id = e.snapshot_id AND s.status = 'complete'"
            " WHERE (e.resource_type, e.resource_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY e.resource_type, e.resource_id, s.finished DESC",
            _keys(prepared),
        )
        return {(row[0], row[1]): (row[2], row[3]) for row in cursor.fetchall()}
