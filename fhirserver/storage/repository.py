"""The repository: the one path through which every resource is read and written.

REST interactions, transactions, loaders and sync all call it, so validation, id and version
assignment, meta, history and search indexing happen in one place. It works on the tenant the
connection points at (tenants.middleware / connection.set_tenant); row-level security enforces
that it cannot touch another.

Stored JSON is the exact text served: reads return it without parsing (StoredResource.content),
except that encrypted PHI elements (storage/phi.py) are sealed on the way in and revealed on
the way out, and their search values become blind-index digests (search/blind.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.db import connection, transaction

from fhirserver import errors
from fhirserver.registry import r4
from fhirserver.search import blind, criteria
from fhirserver.search.extraction import extract
from fhirserver.search.index_values import IndexRows
from fhirserver.storage import phi
from fhirserver.storage.rows import RowWriter
from fhirserver.storage.stored import StoredResource
from fhirserver.validation import validate_resource

__all__ = ["Repository", "StoredResource"]

MALFORMED = frozenset({"structure", "value", "invalid"})  # issue codes that make a 400
BATCH_SIZE = 500  # rows per executemany when buffered


def require_resource_type(resource_type: str) -> None:
    if not r4().is_resource_type(resource_type):
        raise errors.not_found(f"Unknown resource type '{resource_type}'")


# The audit trail (audit/) is written by the server alone and served from its own table.
NOT_WRITABLE = frozenset({"AuditEvent"})


def require_writable(resource_type: str) -> None:
    if resource_type in NOT_WRITABLE:
        raise errors.FhirError.single(
            405, "not-supported", f"{resource_type} is recorded by the server and cannot be written"
        )


def check_valid(resource: object, expected_type: str | None) -> None:
    """Raise on any issue: 400 when every issue is about shape or datatypes (the body is not
    well-formed R4), 422 when some rule is broken (a required element missing, a code outside
    its required value set)."""
    found = validate_resource(resource, expected_type)
    if found:
        status = 400 if all(issue.code in MALFORMED for issue in found) else 422
        raise errors.FhirError(
            status, [errors.Issue(issue.code, issue.diagnostics, issue.expression) for issue in found]
        )


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    """Millisecond precision: what meta.lastUpdated shows is exactly what is stored and compared."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def index_rows(resource: dict) -> IndexRows:
    """The search-index rows of a resource, with blind digests for its encrypted elements."""
    return blind.protect(resource["resourceType"], extract(resource))


def stamp(resource: dict, resource_id: str, version_id: int, last_updated: datetime) -> dict:
    """The resource as stored: resourceType, id and meta first; versionId/lastUpdated ours."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(last_updated)
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta, **rest}


class Repository:
    """Reads and writes resources of the connection's current tenant.

    Writes are sent at once, except inside `buffered()`, where new resources are queued and
    sent in batches; every read (and every write that must read first) sends the queue before
    it looks, so a buffered repository never shows stale data.
    """

    def __init__(self) -> None:
        self._rows = RowWriter()
        self._buffered = False

    @classmethod
    @contextmanager
    def buffered(cls) -> Iterator[Repository]:
        """A repository for many writes in one transaction (bundles, loaders)."""
        repository = cls()
        repository._buffered = True
        yield repository
        repository.flush()

    def flush(self) -> None:
        self._rows.flush()

    # ----- reads ---------------------------------------------------------------------------
    def matching_ids(self, resource_type: str, query: str) -> set[str]:
        """Ids of current resources meeting conditional-interaction criteria."""
        self.flush()
        return criteria.matching_ids(resource_type, query)

    def current(self, resource_type: str, resource_id: str, lock: bool = False) -> StoredResource | None:
        """The current row, deleted or not; None if the resource never existed. `lock` holds
        it (FOR UPDATE) until the transaction ends, so a version check stays true."""
        self.flush()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT version_id, last_updated, deleted, content FROM fhir_resource"
                " WHERE resource_type = %s AND resource_id = %s" + (" FOR UPDATE" if lock else ""),
                [resource_type, resource_id],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        version_id, last_updated, deleted, content = row
        if content is not None:
            content = phi.reveal(resource_type, resource_id, content)
        return StoredResource(resource_type, resource_id, version_id, last_updated, deleted, content)

    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        require_resource_type(resource_type)
        stored = self.current(resource_type, resource_id)
        if stored is None:
            raise errors.not_found(f"{resource_type}/{resource_id} is not known")
        if stored.deleted:
            raise errors.gone(f"{resource_type}/{resource_id} was deleted")
        return stored

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> StoredResource:
        require_resource_type(resource_type)
        if not version_id.isdigit():
            raise errors.not_found(f"{resource_type}/{resource_id} has no version '{version_id}'")
        self.flush()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT last_updated, deleted, content FROM fhir_resource_version"
                " WHERE resource_type = %s AND resource_id = %s AND version_id = %s",
                [resource_type, resource_id, int(version_id)],
            )
            row = cursor.fetchone()
        if row is None:
            raise errors.not_found(f"{resource_type}/{resource_id} has no version {version_id}")
        last_updated, deleted, content = row
        if deleted:
            raise errors.gone(f"version {version_id} is a deletion")
        content = phi.reveal(resource_type, resource_id, content)
        return StoredResource(resource_type, resource_id, int(version_id), last_updated, deleted, content)

    def read_json(self, resource_type: str, resource_id: str) -> dict:
        return orjson.loads(self.read(resource_type, resource_id).content)

    def meta_in_use(self, resource_type: str | None, condition: tuple[str, list] | None = None) -> dict:
        """Profiles, tags and security labels used by current resources (of one type, or all),
        limited by `condition` (SQL on `r`, and its parameters) if given."""
        self.flush()
        where = "NOT r.deleted" + (" AND r.resource_type = %s" if resource_type else "")
        params = [resource_type] if resource_type else []
        if condition is not None:
            where += f" AND {condition[0]}"
            params += condition[1]
        result: dict = {}
        with connection.cursor() as cursor:
            for key in ("profile", "tag", "security"):
                cursor.execute(
                    "SELECT DISTINCT jsonb_array_elements(r.content::jsonb -> 'meta' -> %s)::text"
                    f" FROM fhir_resource r WHERE {where}",
                    [key, *params],
                )
                values = [orjson.loads(row[0]) for row in cursor.fetchall()]
                if values:
                    result[key] = sorted(values, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
        return result

    # ----- writes --------------------------------------------------------------------------
    def reindex(self, resource_type: str | None, progress: Callable[[int], None]) -> int:
        """Rebuild the search index of every current resource (of one type, or all), in batches
        of BATCH_SIZE, each its own transaction, so a long reindex never holds locks for long.
        Returns how many resources were reindexed."""
        self.flush()
        done, after = 0, ("", "")
        type_filter = " AND resource_type = %s" if resource_type else ""
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT resource_type, resource_id, content FROM fhir_resource"
                    f" WHERE NOT deleted AND (resource_type, resource_id) > (%s, %s){type_filter}"
                    " ORDER BY resource_type, resource_id LIMIT %s",
                    [*after, *([resource_type] if resource_type else []), BATCH_SIZE],
                )
                rows = cursor.fetchall()
            if not rows:
                return done
            for row_type, row_id, content in rows:
                resource = orjson.loads(phi.reveal(row_type, row_id, content))
                self._rows.replace_index((row_type, row_id), index_rows(resource))
            self._rows.flush()
            done, after = done + len(rows), (rows[-1][0], rows[-1][1])
            progress(done)

    def reseal(
        self, progress: Callable[[int], None], max_batches: int | None = None, batch_size: int = BATCH_SIZE
    ) -> int:
        """Bring every stored version of the encrypted types (settings.PHI_ENCRYPTED_ELEMENTS)
        under the current master key: tokens under a retired key are re-encrypted, elements
        stored in plaintext (written with encryption off, or before the policy named them) are
        encrypted, and the search index of current rows is rebuilt so their values move to the
        blind index. Batches of `batch_size` rows, each its own transaction with its rows locked,
        so the server keeps serving; a rerun skips what is done. Returns the rows rewritten."""
        self.flush()
        types = sorted(settings.PHI_ENCRYPTED_ELEMENTS)
        done = batches = 0
        for table, keys in (("fhir_resource_version", 3), ("fhir_resource", 2)):
            after: tuple = ("", "", 0)[:keys]
            while max_batches is None or batches < max_batches:
                rows = self._reseal_batch(table, keys, types, after, batch_size)
                if not rows:
                    break
                done, batches, after = done + rows[0], batches + 1, rows[1]
                progress(done)
        return done

    def _reseal_batch(
        self, table: str, keys: int, types: list[str], after: tuple, batch_size: int
    ) -> tuple[int, tuple] | None:
        """Reseal one batch of `table` after the key `after`: (rows rewritten, last key), or
        None past the end."""
        key_sql = ", ".join(("resource_type", "resource_id", "version_id")[:keys])
        placeholders = ", ".join(["%s"] * keys)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {key_sql}, content FROM {table}"
                f" WHERE resource_type = ANY(%s) AND content IS NOT NULL AND ({key_sql}) > ({placeholders})"
                f" ORDER BY {key_sql} LIMIT %s FOR UPDATE",
                [types, *after, batch_size],
            )
            rows = cursor.fetchall()
            if not rows:
                return None
            rewritten = 0
            for *key, content in rows:
                if not phi.needs_resealing(key[0], content):
                    continue
                revealed = phi.reveal(key[0], key[1], content)
                resource = orjson.loads(revealed)
                cursor.execute(
                    f"UPDATE {table} SET content = %s WHERE ({key_sql}) = ({placeholders})",
                    [phi.seal(resource, revealed), *key],
                )
                if table == "fhir_resource":
                    self._rows.replace_index((key[0], key[1]), index_rows(resource))
                rewritten += 1
            self._rows.flush()
        return rewritten, tuple(rows[-1][:keys])

    def change_meta(self, resource_type: str, resource_id: str, change: Callable[[dict], dict]) -> dict:
        """Apply `change` (meta -> meta) to the current version in place, without a new version
        ($meta-add / $meta-delete, which R4 defines so). Returns the new meta."""
        require_writable(resource_type)
        with transaction.atomic(savepoint=False):
            current = self.current(resource_type, resource_id, lock=True)
            if current is None or current.deleted:
                raise errors.not_found(f"{resource_type}/{resource_id} is not a current resource")
            resource = orjson.loads(current.content)
            resource["meta"] = change(resource.get("meta", {}))
            check_valid(resource, resource_type)
            content = phi.seal(resource, orjson.dumps(resource).decode())
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE fhir_resource SET content = %s WHERE resource_type = %s AND resource_id = %s",
                    [content, resource_type, resource_id],
                )
                cursor.execute(
                    "UPDATE fhir_resource_version SET content = %s"
                    " WHERE resource_type = %s AND resource_id = %s AND version_id = %s",
                    [content, resource_type, resource_id, current.version_id],
                )
            return resource["meta"]

    def create(self, resource: dict, resource_id: str | None = None) -> StoredResource:
        """Store a new resource under a server-assigned id (or `resource_id`, see update)."""
        check_valid(resource, None)
        require_writable(resource["resourceType"])
        return self._write(resource, resource_id or new_id(), 1, "POST", previous=None)

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict,
        if_match: int | None = None,
        method: str = "PUT",
    ) -> tuple[StoredResource, bool]:
        """Store a new version; create the resource if it does not exist (update-as-create).

        Returns (stored, created). `if_match` is the version the client last saw (If-Match).
        """
        require_resource_type(resource_type)
        require_writable(resource_type)
        check_valid(resource, resource_type)
        if resource.get("id") != resource_id:
            raise errors.bad_request(
                f"The resource id must equal the id in the URL ('{resource_id}')",
                expression=f"{resource_type}.id",
            )
        with transaction.atomic(savepoint=False):
            previous = self.current(resource_type, resource_id, lock=True)
            self._check_version(previous, if_match)
            if previous is None:
                return self._write(resource, resource_id, 1, method, previous=None), True
            stored = self._write(resource, resource_id, previous.version_id + 1, method, previous)
            return stored, previous.deleted  # bringing a deleted resource back creates it anew

    def delete(
        self, resource_type: str, resource_id: str, if_match: int | None = None
    ) -> StoredResource | None:
        """Record a deletion as a new version. Deleting what is absent or deleted changes nothing."""
        require_resource_type(resource_type)
        require_writable(resource_type)
        with transaction.atomic(savepoint=False):
            previous = self.current(resource_type, resource_id, lock=True)
            self._check_version(previous, if_match)
            if previous is None or previous.deleted:
                return None
            stored = StoredResource(
                resource_type, resource_id, previous.version_id + 1, now(), deleted=True, content=None
            )
            self._rows.add(stored, "DELETE", rows=None, replaces=True)
            self._send()
            return stored

    @staticmethod
    def _check_version(previous: StoredResource | None, if_match: int | None) -> None:
        if if_match is None:
            return
        current_version = previous.version_id if previous and not previous.deleted else None
        if current_version != if_match:
            raise errors.precondition_failed(
                f"If-Match expected version {if_match}, the current version is {current_version or 'none'}"
            )

    def _write(
        self, resource: dict, resource_id: str, version_id: int, method: str, previous: StoredResource | None
    ) -> StoredResource:
        last_updated = now()
        body = stamp(resource, resource_id, version_id, last_updated)
        content = orjson.dumps(body).decode()
        stored = StoredResource(
            resource["resourceType"], resource_id, version_id, last_updated, False, content
        )
        self._rows.add(
            stored, method, index_rows(body), replaces=previous is not None, sealed=phi.seal(body, content)
        )
        self._send()
        return stored

    def _send(self) -> None:
        if not self._buffered or len(self._rows.versions) >= BATCH_SIZE:
            self._rows.flush()
