"""From fetched provider resources to a complete snapshot, through the one write path.

An `Import` takes the crawl's resources one by one while the crawl goes on (sync.runner), inside
one transaction the runner holds open for the whole run, and stores them in batches as they
become ready:
- normalise (sync.normalisation); a resource left out is recorded, as is every removal;
- ids: deterministic local ids (sync.provenance.local_id); the provider's URL of the resource is
  meta.source;
- references to fetched resources are rewritten to their local ids; others become absolute
  URLs at the provider (honest, not dangling); so are attachment URLs naming a Binary at the
  provider (`Binary/<local id>`, relative: R4 datatypes.html#Attachment reads a relative
  Attachment.url like a resource reference, and it stays true whatever URL the tenant is served
  at); attachment URLs elsewhere are kept as they are. Which rewrite applies depends on whether
  the target was fetched, so a resource is ready once every target it names at the provider has
  arrived; what still waits when the crawl ends (its targets are missing, beyond the reference
  depth, left out, or another patient's) is stored then, with absolute URLs for those;
- a SHA-256 of the canonical prepared JSON.

Storing goes through fhirserver.storage.repository (validated, versioned, indexed,
PHI-encrypted), and only resources whose hash differs from the version the last complete
snapshot recorded get a new version; the versions a batch writes get one Provenance (two when
it both creates and updates; sync.provenance), and each manifest row names its Provenance, so
a version a re-sync reuses keeps the Provenance that recorded it.
`finish` writes the manifest rows (the resources' versions and their Provenances) and the
snapshot's `complete` status. Until the runner's transaction commits nothing is visible; a killed
run rolls back, leaves its snapshot `running` with no entries, and the next worker restarts it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import connection

from audit import trail
from audit.interactions import Interaction
from fhirserver.storage.repository import Repository, format_instant, now
from smart_auth.context import AuthContext
from sync.models import Provider, Snapshot, SnapshotEntry
from sync.normalisation import normalise
from sync.provenance import local_id, provenance
from sync.strategies import Key, attachment_binaries, local_key, references_in

BATCH = 500  # resources stored per Repository flush while the crawl runs


@dataclass
class Prepared:
    key: Key  # at the provider
    local: str
    resource: dict
    digest: str
    changes: list[dict] = field(default_factory=list)  # normalisation: {element, reason}


def lock_link(link_id: object) -> None:
    """One import per link at a time, until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"sync:{link_id}"])


class Import:
    def __init__(self, snapshot: Snapshot, provider: Provider) -> None:
        self.snapshot, self.provider = snapshot, provider
        self.recorded = format_instant(now())
        self.changes: list[dict] = []  # every normalisation change: {resource, element, reason}
        self.arrived: set[Key] = set()  # kept after normalising (stored, ready or waiting)
        self.dropped: set[Key] = set()
        self._pending: dict[Key, tuple[dict, list[dict]]] = {}  # normalised, not stored yet
        self._blocked: dict[Key, set[Key]] = {}  # waiting resource -> targets not arrived
        self._waiters: dict[Key, list[Key]] = {}  # target -> resources waiting for it
        self._ready: list[Key] = []
        # (type, local id, version, hash, the id of the Provenance that recorded it, or "")
        self.manifest: list[tuple[str, str, int, str, str]] = []
        self._reused: set[Key] = set()  # Provenances of versions an earlier run wrote
        self.written = 0
        self.patient: str | None = None  # the linked patient's local id, once stored

    def add(self, key: Key, original: dict) -> None:
        if key in self.arrived or key in self.dropped:
            return
        resource, changed = normalise(orjson.loads(orjson.dumps(original)))
        self.changes += [{"resource": f"{key[0]}/{self._local(key)}", **change} for change in changed]
        if resource is None:
            self.dropped.add(key)
            return
        self.arrived.add(key)
        self._pending[key] = (resource, changed)
        blocked = {target for target in self._targets(resource) if target not in self.arrived} - {key}
        if blocked:
            self._blocked[key] = blocked
            for target in blocked:
                self._waiters.setdefault(target, []).append(key)
        else:
            self._ready.append(key)
        for waiter in self._waiters.pop(key, ()):
            waiting = self._blocked[waiter]
            waiting.discard(key)
            if not waiting:
                del self._blocked[waiter]
                self._ready.append(waiter)

    def store_ready(self, at_least: int | None = None) -> None:
        """Store the resources that are ready, if there are `at_least` (BATCH) of them."""
        if self._ready and len(self._ready) >= (BATCH if at_least is None else at_least):
            batch, self._ready = sorted(self._ready), []
            self._store([self._prepare(key) for key in batch])

    def finish(self) -> int:
        """Store what is left (whatever it still waits for will not come), write the manifest and
        complete the snapshot; the number of new versions written."""
        self._ready += self._blocked
        self._blocked, self._waiters = {}, {}
        self.store_ready(at_least=1)
        earlier = _previous_hashes(sorted(self._reused))
        self.manifest += [(*key, *earlier[key]) for key in sorted(self._reused) if key in earlier]
        self.manifest.sort()
        SnapshotEntry.objects.bulk_create(
            [
                SnapshotEntry(
                    snapshot=self.snapshot,
                    resource_type=t,
                    resource_id=i,
                    version_id=v,
                    content_hash=h,
                    provenance_id=p,
                )
                for t, i, v, h, p in self.manifest
            ],
            batch_size=1000,
        )
        counts: dict[str, int] = {}
        for kind, *_ in self.manifest:
            counts[kind] = counts.get(kind, 0) + 1
        snapshot = self.snapshot
        snapshot.status, snapshot.counts, snapshot.written = Snapshot.Status.COMPLETE, counts, self.written
        snapshot.changes = self.changes
        snapshot.finished = now()
        snapshot.save()
        _audit(snapshot, self.patient, len(self.manifest), self.written)
        return self.written

    # ----- preparing -----------------------------------------------------------------------
    def _local(self, key: Key) -> str:
        return local_id(self.provider.id, *key)

    def _targets(self, resource: dict) -> set[Key]:
        base = self.provider.base_url
        targets = {local_key(reference, base) for reference in references_in(resource)}
        return {target for target in targets if target} | set(attachment_binaries(resource, base))

    def _prepare(self, key: Key) -> Prepared:
        resource, changed = self._pending.pop(key)
        base = self.provider.base_url
        rewrite(resource, base, lambda target: self._local(target) if target in self.arrived else None)
        meta = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        local = self._local(key)
        resource = {**resource, "id": local, "meta": {**meta, "source": f"{base}/{key[0]}/{key[1]}"}}
        if key == ("Patient", self.snapshot.patient.provider_patient_id):
            self.patient = local
        return Prepared(key, local, resource, _digest(resource), changed)

    # ----- storing -------------------------------------------------------------------------
    def _store(self, batch: list[Prepared]) -> None:
        keys = [(item.key[0], item.local) for item in batch]
        current, previous = _current_versions(keys), _previous_hashes(keys)
        written: dict[bool, list[tuple[Prepared, int]]] = {True: [], False: []}  # by created
        with Repository.buffered() as repository:
            for item in batch:
                kind = item.key[0]
                present = current.get((kind, item.local))
                version, digest, recorder = previous.get((kind, item.local), (None, None, ""))
                if present is not None and not present[1] and (version, digest) == (present[0], item.digest):
                    self.manifest.append((kind, item.local, version, digest, recorder))
                    if recorder:
                        self._reused.add(("Provenance", recorder))
                    continue
                if present is None:
                    stored = repository.create(item.resource, item.local)
                else:
                    stored, _ = repository.update(kind, item.local, item.resource)
                written[present is None or present[1]].append((item, stored.version_id))
            for created, versions in written.items():
                if versions:
                    record = provenance(versions, created, self.provider, self.recorded)
                    repository.create(record, record["id"])
                    self.manifest.append(("Provenance", record["id"], 1, _digest(record), ""))
                    self.manifest += [
                        (item.key[0], item.local, version, item.digest, record["id"])
                        for item, version in versions
                    ]
                    self.written += len(versions) + 1


def rewrite(value: dict | list, base_url: str, local: Callable[[Key], str | None]) -> None:
    """In place: references and Binary attachment URLs at the provider to local ids (`local`
    gives one for a target that was fetched), else to absolute URLs at the provider."""
    if isinstance(value, dict):
        reference = value.get("reference")
        target = local_key(reference, base_url) if isinstance(reference, str) else None
        if target is not None:
            ident = local(target)
            value["reference"] = f"{target[0]}/{ident}" if ident else f"{base_url}/{target[0]}/{target[1]}"
        url = value.get("url")
        binary = local_key(url, base_url) if isinstance(url, str) else None
        if binary is not None and binary[0] == "Binary":
            ident = local(binary)
            value["url"] = f"Binary/{ident}" if ident else f"{base_url}/Binary/{binary[1]}"
        items = value.values()
    else:
        items = value
    for item in items:
        if isinstance(item, dict | list):
            rewrite(item, base_url, local)


def _audit(snapshot: Snapshot, patient: str | None, resources: int, written: int) -> None:
    """One AuditEvent per stored snapshot (operation $sync, action C, on the local Patient),
    committed with it; the manifest lists every resource, so the event names the snapshot."""
    if not settings.AUDIT_ENABLED:
        return
    link = snapshot.patient
    interaction = Interaction(
        subtype="operation", action="C", resource_type="Patient", operation="sync",
        query=f"snapshot={snapshot.id}&resources={resources}&written={written}",
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


def _previous_hashes(keys: list[Key]) -> dict[Key, tuple[int, str, str]]:
    """(version, hash, Provenance id) each resource had in the latest complete snapshot that
    holds it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (e.resource_type, e.resource_id) e.resource_type, e.resource_id,"
            " e.version_id, e.content_hash, e.provenance_id FROM sync_snapshot_entry e"
            " JOIN sync_snapshot s ON s.id = e.snapshot_id AND s.status = 'complete'"
            " WHERE (e.resource_type, e.resource_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY e.resource_type, e.resource_id, s.finished DESC",
            _keys(keys),
        )
        return {(row[0], row[1]): (row[2], row[3], row[4]) for row in cursor.fetchall()}
