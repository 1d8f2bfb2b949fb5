from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The request middleware chain (request id, access log) and, later, the AuditEvent trail."""

    name = "audit"
