from django.apps import AppConfig


class AccessConfig(AppConfig):
    """Attribute-based access rules, sensitive security labels and patient consents (issue 6,
    item 6): what a user may see beyond their SMART scopes, kept as data."""

    name = "access"
