from tenants.management.commands._tenant_command import SetStatusCommand
from tenants.models import Tenant


class Command(SetStatusCommand):
    help = "Activate a suspended tenant."
    status = Tenant.Status.ACTIVE
