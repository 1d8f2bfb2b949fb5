"""Admin: tenants and domains on the public site; a per-tenant admin site for tenant users."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from tenants.models import Domain, Tenant


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    """Tenants are created and deleted with `manage.py create_tenant` / `delete_tenant`: those
    create and drop schemas, which only the database owner role may do, and the web server
    runs as the runtime role (docs/operations.md)."""

    list_display = ("slug", "name", "status", "schema_name", "created")
    list_filter = ("status",)
    search_fields = ("slug", "name")
    readonly_fields = ("slug", "schema_name", "created")
    fields = ("slug", "name", "status", "schema_name", "created")
    inlines = [DomainInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class TenantAdminSite(admin.AdminSite):
    """The admin of one tenant (its users, later its OAuth clients), at /t/<slug>/admin/."""

    site_url = None

    def each_context(self, request):
        context = super().each_context(request)
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            context["site_header"] = context["site_title"] = f"{tenant.name} administration"
        return context


tenant_admin_site = TenantAdminSite(name="tenant_admin")
tenant_admin_site.register(User, UserAdmin)
tenant_admin_site.register(Group, GroupAdmin)
