"""The sync pages of one tenant, mounted at <tenant>/sync/ (sync.linking)."""

from django.urls import path

from sync import linking

urlpatterns = [
    path("link", linking.providers, name="sync-link"),
    path("link/start", linking.start, name="sync-link-start"),
    path("link/callback", linking.callback, name="sync-link-callback"),
    path("link/<uuid:link_id>", linking.done, name="sync-link-done"),
]
