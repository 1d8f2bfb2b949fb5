"""Resource storage (ARCHITECTURE.md, "Storage"), in each tenant's schema.

One table of current resources and one of every version, both holding the JSON text exactly as
it is served, plus typed search-index tables. Every row also carries `tenant_key`, added and
policed by tenants.rls rather than declared here, so no query can forget it. All writes go
through fhirserver.storage.repository.
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models


class Resource(models.Model):
    """The current version of each resource, deleted ones included (a read gives 410)."""

    pk = models.CompositePrimaryKey("resource_type", "resource_id")
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveBigIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    # NULL (not "") for a deleted resource: there is no body, not an empty one.
    content = models.TextField(null=True, help_text="the resource JSON exactly as served")  # noqa: DJ001

    class Meta:
        db_table = "fhir_resource"
        indexes = [models.Index(fields=["resource_type", "last_updated"], name="fhir_resource_type_updated")]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


class ResourceVersion(models.Model):
    """Every version of every resource, for vread and _history."""

    pk = models.CompositePrimaryKey("resource_type", "resource_id", "version_id")
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveBigIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    method = models.CharField(max_length=8, help_text="POST, PUT, PATCH or DELETE")
    content = models.TextField(null=True, help_text="null for a deletion")  # noqa: DJ001

    class Meta:
        db_table = "fhir_resource_version"
        indexes = [
            models.Index(fields=["last_updated"], name="fhir_version_updated"),
            models.Index(fields=["resource_type", "last_updated"], name="fhir_version_type_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"


class SearchIndex(models.Model):
    """Search-index rows of the current version of a resource: one row per extracted value
    of one search parameter (fhirserver.search.extraction). Replaced on every write."""

    id = models.BigAutoField(primary_key=True)
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    param = models.CharField(max_length=100)
    # Rows of one occurrence of a composite parameter (or `near`) share a number, unique within
    # the resource; NULL for rows of plain parameters (fhirserver.search.extraction).
    composite = models.IntegerField(null=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id} {self.param}"


def index_meta(table: str, *value_fields: str) -> type:
    """Meta of an index table: look-ups by (type, param, values), deletion by resource."""
    short = table.removeprefix("fhir_index_")
    return type(
        "Meta",
        (),
        {
            "db_table": table,
            "indexes": [
                models.Index(fields=["resource_type", "param", *value_fields], name=f"fhir_{short}_lookup"),
                models.Index(fields=["resource_type", "resource_id"], name=f"fhir_{short}_resource"),
            ],
        },
    )


class TokenIndex(SearchIndex):
    """token: system|code, with the display text for :text."""

    system = models.TextField(null=True)  # noqa: DJ001 (no system is not the empty system)
    code = models.TextField()
    text = models.TextField(null=True)  # noqa: DJ001

    Meta = index_meta("fhir_index_token", "code", "system")


class IdentifierTypeIndex(SearchIndex):
    """Identifier.type plus value, for token :of-type (search.html#token)."""

    type_system = models.TextField(null=True)  # noqa: DJ001
    type_code = models.TextField()
    value = models.TextField()

    Meta = index_meta("fhir_index_identifier_type", "type_code", "value")


class StringIndex(SearchIndex):
    """string: `normalized` is lowercase without accents, for the default starts-with match."""

    normalized = models.TextField()
    original = models.TextField()

    class Meta:
        db_table = "fhir_index_string"
        indexes = [
            # text_pattern_ops: the index serves LIKE 'prefix%' whatever the database collation.
            models.Index(
                fields=["resource_type", "param", "normalized"],
                name="fhir_string_lookup",
                opclasses=["varchar_pattern_ops", "varchar_pattern_ops", "text_pattern_ops"],
            ),
            models.Index(fields=["resource_type", "resource_id"], name="fhir_string_resource"),
        ]


class DateIndex(SearchIndex):
    """date: the period a value stands for, [start, end)."""

    start = models.DateTimeField()
    end = models.DateTimeField()

    Meta = index_meta("fhir_index_date", "start", "end")


class NumberIndex(SearchIndex):
    """number: the value and its implicit precision range [low, high)."""

    value = models.DecimalField(max_digits=40, decimal_places=18)
    low = models.DecimalField(max_digits=40, decimal_places=18)
    high = models.DecimalField(max_digits=40, decimal_places=18)

    Meta = index_meta("fhir_index_number", "value")


class QuantityIndex(SearchIndex):
    """quantity: value with precision range, and its unit system, code and unit text."""

    value = models.DecimalField(max_digits=40, decimal_places=18)
    low = models.DecimalField(max_digits=40, decimal_places=18)
    high = models.DecimalField(max_digits=40, decimal_places=18)
    system = models.TextField(null=True)  # noqa: DJ001
    code = models.TextField(null=True)  # noqa: DJ001
    unit = models.TextField(null=True)  # noqa: DJ001

    Meta = index_meta("fhir_index_quantity", "code", "value")


class ReferenceIndex(SearchIndex):
    """reference: a local target (type, id) and/or an absolute or canonical URL."""

    target_type = models.CharField(max_length=64, null=True)  # noqa: DJ001
    target_id = models.CharField(max_length=64, null=True)  # noqa: DJ001
    url = models.TextField(null=True)  # noqa: DJ001

    Meta = index_meta("fhir_index_reference", "target_id", "target_type")


class UriIndex(SearchIndex):
    uri = models.TextField()

    Meta = index_meta("fhir_index_uri", "uri")


class TextIndex(SearchIndex):
    """`_text` (narrative) and `_content` (every string) as tsvectors (search/fulltext.py);
    never for types with encrypted elements."""

    document = SearchVectorField()

    class Meta:
        db_table = "fhir_index_text"
        indexes = [
            GinIndex(fields=["document"], name="fhir_text_document"),
            models.Index(fields=["resource_type", "resource_id"], name="fhir_text_resource"),
        ]


class BlindIndex(SearchIndex):
    """Keyed digests of the values of parameters over encrypted elements (search/blind.py):
    equality of digests is all a search, or a reader of the database, can learn."""

    digest = models.BinaryField()

    Meta = index_meta("fhir_index_blind", "digest")
