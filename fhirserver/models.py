"""Resource storage (ARCHITECTURE.md, "Storage"): one table of current resources and one of
every version, in each tenant's schema. Rows also carry `tenant_key`, added and policed by
tenants.rls rather than declared here, so no query can forget it."""

from django.db import models


class Resource(models.Model):
    """The current version of each resource, deleted ones included (a read gives 410)."""

    pk = models.CompositePrimaryKey("resource_type", "resource_id")
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveBigIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    content = models.TextField(help_text="the resource JSON exactly as served")

    class Meta:
        db_table = "fhir_resource"

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


class ResourceVersion(models.Model):
    """Every version of every resource, for vread and _history."""

    pk = models.CompositePrimaryKey("resource_type", "resource_id", "version_id")
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveBigIntegerField()
    last_updated = models.DateTimeField(db_index=True)
    deleted = models.BooleanField(default=False)
    # NULL (not "") marks a deletion: there is no resource body, not an empty one.
    content = models.TextField(null=True, help_text="null for a deletion")  # noqa: DJ001

    class Meta:
        db_table = "fhir_resource_version"

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"
