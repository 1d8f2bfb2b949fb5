"""URLs inside a tenant, reached at /t/<slug>/... or at <slug>.<PARENT_DOMAIN>/..."""

from django.urls import include, path

from fhirserver.api import views as fhir_views
from tenants.admin import tenant_admin_site

urlpatterns = [
    path("fhir", fhir_views.base),  # the base without a trailing slash (POST of a Bundle)
    path("fhir/", include("fhirserver.api.urls")),
    path("admin/", tenant_admin_site.urls),
]
