from django.apps import AppConfig


class SmartAuthConfig(AppConfig):
    """SMART on FHIR authorization (issue 5). The auth mode is validated in config.settings."""

    name = "smart_auth"
