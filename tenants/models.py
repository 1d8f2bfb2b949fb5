"""Tenants and their custom domains. Both live in the public schema."""

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Tenant(TenantMixin):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.CharField(max_length=63, unique=True)
    name = models.CharField("display name", max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created = models.DateTimeField(auto_now_add=True)

    # Schemas are created and dropped by tenants.lifecycle, as the owner role, in one
    # transaction with this row; never implicitly on save() or delete().
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Domain(DomainMixin):
    """An extra host name for a tenant (e.g. fhir.stmarys.example). `<slug>.<PARENT_DOMAIN>`
    works without a row here."""

    def __str__(self) -> str:
        return self.domain
