from django.core.management.base import BaseCommand, CommandError

from tenants import lifecycle
from tenants.management.commands._tenant_command import operator_errors


class Command(BaseCommand):
    help = "Delete a tenant and DROP its schema with all its data. Asks first unless --yes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, slug: str, yes: bool, **options) -> None:
        with operator_errors():
            tenant = lifecycle.get_tenant(slug)
        if not yes:
            answer = input(
                f"Delete tenant {slug} and drop schema {tenant.schema_name} with ALL its data? "
                "Type the slug to confirm: "
            )
            if answer.strip() != slug:
                raise CommandError("not confirmed; nothing deleted")
        with operator_errors():
            lifecycle.delete_tenant(slug)
        self.stdout.write(self.style.SUCCESS(f"tenant {slug} deleted"))
