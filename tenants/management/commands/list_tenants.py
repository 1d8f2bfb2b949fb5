from django.core.management.base import BaseCommand

from tenants.models import Tenant


class Command(BaseCommand):
    help = "List tenants: slug, status, schema, created, display name."

    def handle(self, *args, **options) -> None:
        rows = [("SLUG", "STATUS", "SCHEMA", "CREATED", "NAME")]
        rows += [
            (t.slug, t.status, t.schema_name, t.created.strftime("%Y-%m-%d %H:%M"), t.name)
            for t in Tenant.objects.order_by("slug")
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[4]]
            self.stdout.write("  ".join(cells))
