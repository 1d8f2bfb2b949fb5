"""A provider's request budget, shared by every tenant that reaches it with the same client.

Providers count requests per client registration (Epic and Cerner per client id, payers per
app), not per customer of ours: two tenants syncing from one provider with one client id draw
from one budget. The row holds no tenant data and no credential: its key is a hash of the
provider's FHIR base and the client id (sync.limiter.budget_key).
"""

from django.db import models


class RequestBudget(models.Model):
    key = models.CharField(max_length=64, primary_key=True, help_text="SHA-256 of base URL and client id")
    # The earliest moment the next request may start (the generic cell rate algorithm).
    next_request_at = models.DateTimeField()

    class Meta:
        db_table = "sync_request_budget"

    def __str__(self) -> str:
        return self.key[:12]
