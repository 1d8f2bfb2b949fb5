from django.core.management import call_command
from django.core.management.base import BaseCommand

from tenants.roles import ensure_runtime_role


class Command(BaseCommand):
    help = (
        "Create or update the runtime database role, then migrate the public schema and every "
        "tenant schema and (re)install row-level security. Safe to run repeatedly."
    )

    def handle(self, *args, **options) -> None:
        ensure_runtime_role()
        call_command("migrate_schemas", interactive=False, verbosity=max(0, options["verbosity"] - 1))
        self.stdout.write(self.style.SUCCESS("database ready"))
