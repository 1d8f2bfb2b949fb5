from __future__ import annotations

from urllib.parse import urlencode

from django.core.management.base import BaseCommand, CommandError

from smart_auth.models import Client, EhrLaunch
from tenants.management.commands._tenant_command import in_tenant


class Command(BaseCommand):
    help = (
        "Mint an EHR launch: an opaque `launch` value standing for a patient (and encounter) "
        "open in the EHR. With --client and --fhir-base, prints the app's launch URL."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--patient", required=True)
        parser.add_argument("--encounter", default="")
        parser.add_argument("--client", help="client id whose launch URI to print")
        parser.add_argument("--fhir-base", help="the tenant's FHIR base URL (the launch URL's iss)")

    def handle(self, *args, tenant: str, patient: str, encounter: str, client, fhir_base, **options) -> None:
        with in_tenant(tenant):
            launch = EhrLaunch.objects.create(patient=patient, encounter=encounter)
            app = Client.objects.filter(client_id=client).first() if client else None
        if client and (app is None or not app.launch_uri or not fhir_base):
            raise CommandError("--client needs a registered client with a launch URI, and --fhir-base")
        self.stdout.write(launch.launch_id)
        if app is not None:
            self.stdout.write(f"{app.launch_uri}?{urlencode({'iss': fhir_base, 'launch': launch.launch_id})}")
