"""Link a patient at a provider to the tenant; prints the link id that `sync` takes."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from sync import secrets
from sync.models import LinkedPatient, Provider
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = "Link a provider's patient: link_patient --tenant T --provider N --provider-patient-id ID"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--provider", required=True, help="the provider's name")
        parser.add_argument("--provider-patient-id", required=True)
        parser.add_argument("--refresh-token", default="", help="a refresh token issued for this patient")

    def handle(self, *args, tenant: str, provider: str, provider_patient_id: str, refresh_token: str, **o):
        with in_tenant(tenant):
            found = Provider.objects.filter(name=provider).first()
            if found is None:
                raise CommandError(f"no provider named {provider!r} in tenant {tenant}")
            link = LinkedPatient.objects.filter(
                provider=found, provider_patient_id=provider_patient_id
            ).first()
            link = link or LinkedPatient(provider=found, provider_patient_id=provider_patient_id)
            if refresh_token:
                secrets.put(link, "refresh_token", refresh_token)
                link.access_token, link.access_token_expires = "", None
            link.save()
        self.stdout.write(str(link.id))
