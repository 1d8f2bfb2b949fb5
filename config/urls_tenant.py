"""URLs inside a tenant, reached at /t/<slug>/... or at <slug>.<PARENT_DOMAIN>/..."""

from django.urls import path

from tenants.admin import tenant_admin_site

urlpatterns = [
    path("admin/", tenant_admin_site.urls),
]
