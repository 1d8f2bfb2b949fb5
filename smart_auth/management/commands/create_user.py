from __future__ import annotations

import re

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from smart_auth.models import UserProfile
from tenants.management.commands._tenant_command import in_tenant

FHIR_USER = re.compile(r"^(Patient|Practitioner|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}$")
ORGANIZATION = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")


class Command(BaseCommand):
    help = "Create (or update) a login of a tenant, with its FHIR identity (fhirUser) and role."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--fhir-user", default="", help="e.g. Patient/123 or Practitioner/9")
        parser.add_argument("--role", default="", help="explicit role (else inferred from scopes)")
        parser.add_argument("--organization", default="", help="e.g. Organization/7, for access rules")

    def handle(self, *args, tenant: str, username: str, password: str, fhir_user: str, role: str, **options):
        if fhir_user and not FHIR_USER.match(fhir_user):
            raise CommandError(
                "--fhir-user must be Patient/<id>, Practitioner/<id>, RelatedPerson/<id> or Person/<id>"
            )
        organization = options["organization"]
        if organization and not ORGANIZATION.match(organization):
            raise CommandError("--organization must be Organization/<id>")
        with in_tenant(tenant):
            user, created = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
            UserProfile.objects.update_or_create(
                user=user, defaults={"fhir_user": fhir_user, "role": role, "organization": organization}
            )
        verb = "created" if created else "updated"
        self.stdout.write(self.style.SUCCESS(f"user {username} {verb} in tenant {tenant}"))
