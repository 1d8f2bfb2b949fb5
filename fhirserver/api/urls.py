"""The FHIR REST API of one tenant, mounted at <tenant base>/fhir/."""

from django.urls import path, re_path

from fhirserver.api import views

TYPE = r"(?P<resource_type>[A-Z][A-Za-z]+)"
ID = r"(?P<resource_id>[A-Za-z0-9\-.]{1,64})"
EXPORT = r"(?P<export_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"

urlpatterns = [
    path("", views.base),
    path("metadata", views.metadata),
    path("_history", views.system_history),
    path("$meta", views.operation, {"name": "meta"}),
    # Bulk Data $export: kick-off, then the status and file URLs its answers name.
    path("$export", views.export, {"name": "export"}),
    re_path(r"^(?P<resource_type>Patient)/\$export$", views.export, {"name": "export"}),
    re_path(rf"^(?P<resource_type>Group)/{ID}/\$export$", views.export, {"name": "export"}),
    re_path(rf"^\$export-status/{EXPORT}$", views.export_status),
    re_path(rf"^\$export-file/{EXPORT}/(?P<file_name>[A-Za-z_]+-[0-9]+\.ndjson)$", views.export_file),
    # Sync snapshots (sync/views.py): a linked patient's list, and one complete snapshot as a Bundle.
    path("$snapshots", views.sync_snapshots),
    path("$snapshot", views.sync_snapshot, {"name": "snapshot"}),
    re_path(rf"^{TYPE}/\$(?P<name>validate|meta|everything)$", views.operation),
    re_path(rf"^{TYPE}/{ID}/\$(?P<name>validate|meta|meta-add|meta-delete|everything)$", views.operation),
    re_path(rf"^{TYPE}$", views.type_level),
    re_path(rf"^{TYPE}/_search$", views.type_search),
    re_path(rf"^{TYPE}/_history$", views.type_history),
    re_path(rf"^{TYPE}/{ID}$", views.instance),
    re_path(rf"^{TYPE}/{ID}/_history$", views.instance_history),
    re_path(rf"^{TYPE}/{ID}/(?P<target_type>[A-Z][A-Za-z]+)$", views.compartment),
    re_path(rf"^{TYPE}/{ID}/_history/(?P<version_id>[^/]+)$", views.version),
]
