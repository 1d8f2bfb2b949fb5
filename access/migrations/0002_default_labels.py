"""Sensitive confidentiality labels of a new tenant: restricted (R) and very restricted (V)
data need a role of their own (edit them in the tenant admin)."""

from django.db import migrations

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
DEFAULTS = [
    ("R", "restricted", "Restricted: seen only by users with the restricted role"),
    ("V", "very-restricted", "Very restricted: seen only by users with the very-restricted role"),
]


def add_defaults(apps, schema_editor):
    label = apps.get_model("access", "SecurityLabelRule")
    for code, role, description in DEFAULTS:
        label.objects.get_or_create(
            system=CONFIDENTIALITY, code=code, defaults={"role": role, "description": description}
        )


class Migration(migrations.Migration):
    dependencies = [("access", "0001_initial")]

    operations = [migrations.RunPython(add_defaults, migrations.RunPython.noop)]
