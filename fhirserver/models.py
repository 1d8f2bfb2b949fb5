"""Resource storage (ARCHITECTURE.md, "Storage"), in each tenant's schema.

One table of current resources and one of every version, both holding the JSON text exactly as
it is served, plus typed search-index tables. Every row also carries `tenant_key`, added and
policed by tenants.rls rather than declared here, so no query can forget it. All writes go
through fhirserver.storage.repository.
"""

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


class TokenIndex(models.Model):
    """Token search values (system|code) of current resources, one row per value."""

    id = models.BigAutoField(primary_key=True)
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    param = models.CharField(max_length=100)
    system = models.TextField(null=True)  # noqa: DJ001 (absent system differs from "")
    code = models.TextField()

    class Meta:
        db_table = "fhir_index_token"
        indexes = [
            models.Index(fields=["resource_type", "param", "code", "system"], name="fhir_token_lookup"),
            models.Index(fields=["resource_type", "resource_id"], name="fhir_token_resource"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id} {self.param}={self.system}|{self.code}"
