"""Providers, linked patients and snapshots in each tenant's admin (/t/<slug>/admin/).

Sealed credentials are never shown: the admin sees whether one is set, not its value; they are
set with `manage.py add_provider` / `link_patient`. The providers' action "Forget what sync
learned" clears `learned` (the remembered `$everything` outcome), so the next run tries again.
"""

from django.contrib import admin

from sync.models import LinkedPatient, Provider, Snapshot
from tenants.admin import tenant_admin_site


@admin.register(Provider, site=tenant_admin_site)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "base_url", "requests_per_minute", "concurrency", "created")
    list_filter = ("kind",)
    exclude = ("client_secret", "private_key")
    readonly_fields = ("learned",)
    actions = ("forget_learned",)

    @admin.action(description="Forget what sync learned (try $everything again)")
    def forget_learned(self, request, queryset) -> None:
        count = queryset.update(learned={})
        self.message_user(request, f"Sync forgot what it learned about {count} provider(s).")


@admin.register(LinkedPatient, site=tenant_admin_site)
class LinkedPatientAdmin(admin.ModelAdmin):
    list_display = ("id", "provider", "provider_patient_id", "local_patient_id", "created")
    list_filter = ("provider",)
    exclude = ("refresh_token", "access_token")
    readonly_fields = ("access_token_expires", "local_patient_id")


@admin.register(Snapshot, site=tenant_admin_site)
class SnapshotAdmin(admin.ModelAdmin):
    """Per run: status, counts by type, requests, retries, time waiting on limits, what changed."""

    list_display = ("id", "patient", "status", "fetched", "written", "requests", "retries", "finished")
    list_filter = ("status",)
    readonly_fields = (
        "patient", "status", "description", "counts", "fetched", "written", "requests", "retries",
        "waited_seconds", "changes", "attempts", "created", "started", "finished",
    )  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False
