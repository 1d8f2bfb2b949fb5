from tenants.management.commands._tenant_command import SetStatusCommand
from tenants.models import Tenant


class Command(SetStatusCommand):
    help = "Suspend a tenant: its endpoints answer 403 until it is activated again. Data is kept."
    status = Tenant.Status.SUSPENDED
