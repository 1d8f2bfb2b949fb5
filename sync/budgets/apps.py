from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    """The request budgets of providers, in the public schema: one per provider API and client,
    however many tenants connect to it with that client (sync.limiter)."""

    name = "sync.budgets"
    label = "sync_budgets"
    default_auto_field = "django.db.models.BigAutoField"
