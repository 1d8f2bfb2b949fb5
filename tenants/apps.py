from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from tenants.rls import secure_migrated_schema

        post_migrate.connect(secure_migrated_schema, sender=self, dispatch_uid="tenants.rls")
