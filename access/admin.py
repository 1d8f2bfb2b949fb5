"""Access rules and sensitive labels in each tenant's admin (/t/<slug>/admin/)."""

from django.contrib import admin

from access.models import AccessRule, SecurityLabelRule
from tenants.admin import tenant_admin_site


@admin.register(AccessRule, site=tenant_admin_site)
class AccessRuleAdmin(admin.ModelAdmin):
    list_display = ("role", "patient_criteria", "description", "active")
    list_filter = ("role", "active")
    search_fields = ("role", "patient_criteria", "description")


@admin.register(SecurityLabelRule, site=tenant_admin_site)
class SecurityLabelRuleAdmin(admin.ModelAdmin):
    list_display = ("system", "code", "role", "description")
    search_fields = ("system", "code", "role")
