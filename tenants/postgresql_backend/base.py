"""django-tenants' backend, plus the row-level-security session setting.

django-tenants sets `search_path` on each cursor for the connection's current schema. We set
`app.current_tenant` in the same statement, so the RLS policies (tenants.rls) always see the tenant
the search path points at: per request, in management commands, in workers, and on persistent
connections reused across requests. The key is the schema name, which is what the policies in each
schema compare against.
"""

import django.db.utils
import psycopg
from django_tenants.postgresql_backend import base as tenants_base
from django_tenants.utils import get_limit_set_calls, quote_schema_name

RLS_SETTING = "app.current_tenant"

DatabaseError = tenants_base.DatabaseError
IntegrityError = tenants_base.IntegrityError


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    def set_tenant(self, tenant, include_public=True):
        """As django-tenants', but keep the settings already sent when the schema is unchanged,
        so consecutive requests for one tenant on a reused connection cost no extra query."""
        unchanged = (
            self.search_path_set_schemas is not None
            and getattr(tenant, "schema_name", None) == self.schema_name
            and include_public == self.include_public_schema
        )
        if unchanged:
            self.tenant = tenant
            return
        super().set_tenant(tenant, include_public)

    def _handle_search_path(self, cursor=None):
        if self._setting_search_path:
            return  # re-entered while obtaining the cursor below
        if get_limit_set_calls() and self.search_path_set_schemas:
            return

        search_paths = self._get_cursor_search_paths()  # validates every schema name
        self._setting_search_path = True
        target = self.connection.cursor() if cursor is None else cursor
        try:
            target.execute(
                "SELECT set_config('search_path', %s, false), set_config(%s, %s, false)",
                [",".join(quote_schema_name(s) for s in search_paths), RLS_SETTING, self.schema_name],
            )
        except (django.db.utils.DatabaseError, psycopg.InternalError):
            # In an aborted transaction: the next statement fails anyway and the rollback
            # clears our cache (see django-tenants' rollback()), so the settings are re-sent.
            self.search_path_set_schemas = None
        else:
            self.search_path_set_schemas = search_paths
        finally:
            self._setting_search_path = False
            if cursor is None:
                target.close()
