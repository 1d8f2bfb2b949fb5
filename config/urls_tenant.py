"""URLs inside a tenant, reached at /t/<slug>/... or at <slug>.<PARENT_DOMAIN>/..."""

from django.urls import include, path

from fhirserver.api import views as fhir_views
from smart_auth.urls import well_known_patterns
from tenants.admin import tenant_admin_site

urlpatterns = [
    *well_known_patterns,
    path("fhir", fhir_views.base),  # the base without a trailing slash (POST of a Bundle)
    path("fhir/", include("fhirserver.api.urls")),
    path("auth/", include("smart_auth.urls")),
    path("sync/", include("sync.urls")),
    path("admin/", tenant_admin_site.urls),
]
