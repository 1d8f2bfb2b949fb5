from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from tenants.lifecycle import TenantError, get_tenant

DEMO_USER = "admin"


class Command(BaseCommand):
    help = (
        "Give a tenant (default: demo) and the platform an administrator named 'admin' whose "
        "password is DEMO_PASSWORD. Idempotent; for development only."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", default="demo")

    def handle(self, *args, tenant: str, **options) -> None:
        password = getattr(settings, "DEMO_PASSWORD", None)
        if not settings.DEBUG or not password:
            raise CommandError("seed_demo needs DEBUG on and DEMO_PASSWORD set (make run does both)")
        try:
            target = get_tenant(tenant)
        except TenantError as exc:
            raise CommandError(str(exc)) from None
        self._ensure_admin(password)  # platform admin, public schema
        connection.set_tenant(target)
        try:
            self._ensure_admin(password)
        finally:
            connection.set_schema_to_public()
        self.stdout.write(self.style.SUCCESS(f"demo administrator '{DEMO_USER}' ready"))

    def _ensure_admin(self, password: str) -> None:
        user, _ = User.objects.get_or_create(username=DEMO_USER)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
