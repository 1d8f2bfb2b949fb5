"""OAuth clients, tokens and SMART settings in each tenant's admin (/t/<slug>/admin/). The
toolkit registers its models on the platform admin, whose public schema has no such tables."""

from django.contrib import admin
from oauth2_provider.models import AccessToken, Grant, IDToken, RefreshToken

from smart_auth.models import BreakGlassAccess, Client, EhrLaunch, UserProfile
from tenants.admin import tenant_admin_site

for model in (Client, AccessToken, Grant, IDToken, RefreshToken):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(Client, site=tenant_admin_site)
class ClientAdmin(admin.ModelAdmin):
    list_display = ("client_id", "name", "client_type", "authorization_grant_type", "created")
    list_filter = ("client_type", "authorization_grant_type")
    search_fields = ("client_id", "name")
    fields = (
        "client_id",
        "name",
        "client_type",
        "authorization_grant_type",
        "client_secret",
        "hash_client_secret",
        "redirect_uris",
        "allowed_scopes",
        "rotate_refresh_tokens",
        "launch_uri",
        "jwks",
        "jwks_uri",
        "algorithm",
    )


@admin.register(AccessToken, site=tenant_admin_site)
class AccessTokenAdmin(admin.ModelAdmin):
    """Tokens are stored as hashes: the admin can see and revoke them, never read them."""

    list_display = ("id", "application", "user", "scope", "expires")
    list_filter = ("application",)
    readonly_fields = ("token_checksum", "application", "user", "scope", "expires", "source_refresh_token")
    exclude = ("token", "id_token")


@admin.register(RefreshToken, site=tenant_admin_site)
class RefreshTokenAdmin(admin.ModelAdmin):
    list_display = ("id", "application", "user", "created", "revoked")
    readonly_fields = ("token_checksum", "application", "user", "access_token", "token_family", "revoked")
    exclude = ("token",)


@admin.register(UserProfile, site=tenant_admin_site)
class UserProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "fhir_user", "role", "organization")
    search_fields = ("user__username", "fhir_user", "organization")


@admin.register(EhrLaunch, site=tenant_admin_site)
class EhrLaunchAdmin(admin.ModelAdmin):
    list_display = ("launch_id", "patient", "encounter", "created", "expires")


@admin.register(BreakGlassAccess, site=tenant_admin_site)
class BreakGlassAccessAdmin(admin.ModelAdmin):
    """For review: everything is as recorded except the reviewer's tick."""

    list_display = ("at", "user", "client_id", "method", "path", "reason", "reviewed")
    list_filter = ("reviewed", "at")
    search_fields = ("user", "client_id", "request_id")
    readonly_fields = ("at", "user", "client_id", "reason", "method", "path", "request_id")
    fields = (*readonly_fields, "reviewed")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
