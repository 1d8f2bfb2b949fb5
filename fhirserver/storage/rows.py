"""The SQL of writing: version rows, current rows and search-index rows, sent in batches.

A write touches the version table, the current table and up to ten index tables. Each table's
rows of a batch go as one INSERT over `unnest` of one array per column: a 25,000-resource
transaction has ~430,000 index rows, and one statement per table instead of one per row (even
pipelined) is what makes it load in seconds. (COPY would be faster still, but PostgreSQL
refuses COPY FROM into tables under row-level security.)
"""

from __future__ import annotations

import psycopg
from django.db import connection, transaction

from fhirserver.search.index_values import IndexRows
from fhirserver.storage.stored import StoredResource

_KEY = "resource_type text, resource_id text"
_VERSION_COLUMNS = (
    f"{_KEY}, version_id bigint, last_updated timestamptz, deleted boolean, method text, content text"
)
_CURRENT_COLUMNS = _VERSION_COLUMNS.replace(" method text,", "")
# IndexRows attribute -> (table, columns after `param` with their types, in the order of the row tuples)
INDEX_TABLES = {
    "tokens": ("fhir_index_token", "system text, code text, text text"),
    "identifier_types": ("fhir_index_identifier_type", "type_system text, type_code text, value text"),
    "strings": ("fhir_index_string", "normalized text, original text"),
    "dates": ("fhir_index_date", "start timestamptz, end timestamptz"),
    "numbers": ("fhir_index_number", "value numeric, low numeric, high numeric"),
    "quantities": (
        "fhir_index_quantity",
        "value numeric, low numeric, high numeric, system text, code text, unit text",
    ),
    "references": ("fhir_index_reference", "target_type text, target_id text, url text"),
    "uris": ("fhir_index_uri", "uri text"),
    "blinds": ("fhir_index_blind", "digest bytea"),
    "texts": ("fhir_index_text", "document text"),
}
# Values the database computes from the one sent (search/fulltext.py); others are stored as sent.
_COMPUTED = {"document": "to_tsvector('simple', {})"}


def _insert(table: str, columns: str, suffix: str = "") -> str:
    """INSERT of one row per array position; `columns` is "name type, ...", and each `%b` is the
    list of one column's values, sent in binary."""
    pairs = [column.split() for column in columns.split(", ")]
    aliases = [f"c{i}" for i in range(len(pairs))]
    names = ", ".join(f'"{name}"' for name, _ in pairs)
    values = ", ".join(
        _COMPUTED.get(name, "{}").format(a) for (name, _), a in zip(pairs, aliases, strict=True)
    )
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in pairs)
    source = f"unnest({arrays}) AS u({', '.join(aliases)})"
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM {source}{suffix}"


INSERT_VERSION = _insert("fhir_resource_version", _VERSION_COLUMNS)
UPSERT_CURRENT = _insert(
    "fhir_resource",
    _CURRENT_COLUMNS,
    " ON CONFLICT (resource_type, resource_id) DO UPDATE SET version_id = EXCLUDED.version_id,"
    " last_updated = EXCLUDED.last_updated, deleted = EXCLUDED.deleted, content = EXCLUDED.content",
)
INSERT_INDEX = {
    kind: _insert(table, f"{_KEY}, param text, {columns}") for kind, (table, columns) in INDEX_TABLES.items()
}
# Rows of composite groups: the same tables with the group number last.
INSERT_COMPONENT = {
    kind: _insert(table, f"{_KEY}, param text, {columns}, composite integer")
    for kind, (table, columns) in INDEX_TABLES.items()
}
_KEYS_IN = "(resource_type, resource_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
DELETE_INDEX = [f"DELETE FROM {table} WHERE {_KEYS_IN}" for table, _ in INDEX_TABLES.values()]


def _columns(rows: list[tuple]) -> list[list]:
    """Row tuples as one list per column (the arrays `unnest` takes apart again)."""
    return [list(column) for column in zip(*rows, strict=True)]


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
        with transaction.atomic(savepoint=False), connection.cursor() as django_cursor:
            # Django's cursor binds parameters on the client, quoting every array element into
            # the SQL text (most of the time of a large batch); the driver's own cursor, on the
            # same connection and transaction, sends the arrays in binary (`%b`) instead.
            cursor = psycopg.Cursor(django_cursor.cursor.connection)
            if self.versions:
                cursor.execute(INSERT_VERSION, _columns(self.versions))
                cursor.execute(UPSERT_CURRENT, _columns(self.currents))
            if self.replaced:
                for statement in DELETE_INDEX:
                    cursor.execute(statement, _columns(self.replaced))
            for kind, rows in self.index.items():
                if rows:
                    cursor.execute(INSERT_INDEX[kind], _columns(rows))
            for kind, rows in self.components.items():
                if rows:
                    cursor.execute(INSERT_COMPONENT[kind], _columns(rows))
        self.__init__()
