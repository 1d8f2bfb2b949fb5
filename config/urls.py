"""URLs of the public site (no tenant): probes and the platform admin (tenants, domains)."""

from django.contrib import admin
from django.urls import path

from config import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
]
