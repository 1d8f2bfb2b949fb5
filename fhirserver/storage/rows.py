"""The SQL of writing: version rows, current rows and search-index rows, sent in batches.

A write touches the version table, the current table and up to nine index tables; sending each
as one executemany (psycopg pipelines it) is what lets a 25,000-entry transaction load in
seconds. (COPY would be faster still, but PostgreSQL refuses COPY FROM into tables under
row-level security.)
"""

from __future__ import annotations

from django.db import connection, transaction

from fhirserver.search.index_values import IndexRows
from fhirserver.storage.stored import StoredResource

INSERT_VERSION = (
    "INSERT INTO fhir_resource_version"
    " (resource_type, resource_id, version_id, last_updated, deleted, method, content)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
UPSERT_CURRENT = (
    "INSERT INTO fhir_resource (resource_type, resource_id, version_id, last_updated, deleted, content)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (resource_type, resource_id) DO UPDATE SET"
    " version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated,"
    " deleted = EXCLUDED.deleted, content = EXCLUDED.content"
)
# IndexRows attribute -> (table, value columns after `param`, in the order of the row tuples)
INDEX_TABLES = {
    "tokens": ("fhir_index_token", ("system", "code", "text")),
    "identifier_types": ("fhir_index_identifier_type", ("type_system", "type_code", "value")),
    "strings": ("fhir_index_string", ("normalized", "original")),
    "dates": ("fhir_index_date", ("start", "end")),
    "numbers": ("fhir_index_number", ("value", "low", "high")),
    "quantities": ("fhir_index_quantity", ("value", "low", "high", "system", "code", "unit")),
    "references": ("fhir_index_reference", ("target_type", "target_id", "url")),
    "uris": ("fhir_index_uri", ("uri",)),
    "blinds": ("fhir_index_blind", ("digest",)),
    "texts": ("fhir_index_text", ("document",)),
}
# Values the database computes from the one sent (search/fulltext.py); others are sent as they are.
_PLACEHOLDERS = {"document": "to_tsvector('simple', %s)"}


def _insert_index(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{name}"' for name in ("resource_type", "resource_id", "param", *columns))
    values = ", ".join(["%s"] * 3 + [_PLACEHOLDERS.get(name, "%s") for name in columns])
    return f"INSERT INTO {table} ({names}) VALUES ({values})"


INSERT_INDEX = {kind: _insert_index(table, columns) for kind, (table, columns) in INDEX_TABLES.items()}
# Rows of composite groups: the same tables with the group number last.
INSERT_COMPONENT = {
    kind: _insert_index(table, (*columns, "composite")) for kind, (table, columns) in INDEX_TABLES.items()
}
DELETE_INDEX = [
    f"DELETE FROM {table} WHERE resource_type = %s AND resource_id = %s" for table, _ in INDEX_TABLES.values()
]


class RowWriter:
    """Rows waiting to be written. `flush` sends them; nothing reads them before that."""

    def __init__(self) -> None:
        self.versions: list[tuple] = []
        self.currents: list[tuple] = []
        self.replaced: list[tuple[str, str]] = []
        self.index: dict[str, list[tuple]] = {kind: [] for kind in INDEX_TABLES}
        self.components: dict[str, list[tuple]] = {kind: [] for kind in INDEX_TABLES}

    def add(
        self,
        stored: StoredResource,
        method: str,
        rows: IndexRows | None,
        replaces: bool,
        sealed: str | None = None,
    ) -> None:
        """Queue a version; `sealed` is the text to store when it differs from what is served
        (encrypted elements, storage/phi.py)."""
        key = (stored.resource_type, stored.resource_id)
        row = (stored.version_id, stored.last_updated, stored.deleted)
        content = sealed if sealed is not None else stored.content
        self.versions.append((*key, *row, method, content))
        self.currents.append((*key, *row, content))
        if replaces:
            self.replaced.append(key)
        if rows is not None:
            self._add_index(key, rows)

    def replace_index(self, key: tuple[str, str], rows: IndexRows) -> None:
        """New index rows for an unchanged resource (reindexing after definitions change)."""
        self.replaced.append(key)
        self._add_index(key, rows)

    def _add_index(self, key: tuple[str, str], rows: IndexRows) -> None:
        for kind, target in self.index.items():
            target += [(*key, *values) for values in getattr(rows, kind)]
        for kind, group, values in rows.components:
            self.components[kind].append((*key, *values, group))

    def flush(self) -> None:
        if not (self.versions or self.replaced):
            return
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            if self.versions:
                cursor.executemany(INSERT_VERSION, self.versions)
                cursor.executemany(UPSERT_CURRENT, self.currents)
            if self.replaced:
                for statement in DELETE_INDEX:
                    cursor.executemany(statement, self.replaced)
            for kind, rows in self.index.items():
                if rows:
                    cursor.executemany(INSERT_INDEX[kind], rows)
            for kind, rows in self.components.items():
                if rows:
                    cursor.executemany(INSERT_COMPONENT[kind], rows)
        self.__init__()
