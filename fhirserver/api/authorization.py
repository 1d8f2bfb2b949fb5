"""SMART scope enforcement on every FHIR interaction, then ABAC and consent: the one place that
decides what a token may reach (smart_auth.scopes parses; access.policy turns the tenant's
access rules, sensitive labels and Consent resources into conditions; this module applies both).

For a resource type and an interaction (smart_auth.scopes.INTERACTION_PERMISSION), the granting
scopes give a `Filter`, a SQL condition on the fhir_resource row, or None for "every resource of
the type". A resource is reachable when any granting scope reaches it:

- `user/` and `system/` scopes reach every resource of the type;
- `patient/` scopes reach the launch patient's compartment (fhirserver.search.compartment) for
  types in the Patient compartment, and every resource of the other types (Practitioner,
  Organization, Medication...: what a patient app must read to follow its own references, as
  US Core and Inferno expect; SMART leaves it to the server, "Patient-specific scopes");
- a v2 restriction (`?category=...`) further limits its scope to resources meeting that search,
  compiled by the search code itself.

Then, for user tokens, the conditions of access.policy are ANDed in: ABAC rules of the user's
roles, security labels they may not see, applicable Consent deny provisions (reading only).

Outside the reach: 403 with an OperationOutcome `forbidden`, also for a type the token has no scope
for at all. Searches add the filter to their SQL, so paging and totals stay exact. Instance
checks cost one query, and none for unrestricted tokens (the development context among them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection
from django.http import HttpRequest

from access.policy import Policy
from fhirserver import errors
from fhirserver.registry import r4
from fhirserver.search import compartment, query, sql
from smart_auth.context import AuthContext
from smart_auth.scopes import ResourceScope, ScopeSet, granted

Row = tuple[str, str, str]  # (type, id, content) of included resources


@dataclass(frozen=True)
class Filter:
    """A condition on `r`, a fhir_resource row of one type, with its parameters."""

    sql: str
    params: tuple

    def on(self, resource_type: str, id_sql: str) -> tuple[str, list]:
        """The same condition on another expression holding ids of that type."""
        return (
            f"{id_sql} IN (SELECT r.resource_id FROM fhir_resource r"
            f" WHERE r.resource_type = %s AND NOT r.deleted AND {self.sql})",
            [resource_type, *self.params],
        )


class Access:
    """What the token of one request may reach."""

    def __init__(self, context: AuthContext | None):
        self.context = context
        self.scopes = granted(context.scopes) if context is not None else ScopeSet()
        self.policy = Policy(context)

    # ----- type level ---------------------------------------------------------------------------
    def require(self, resource_type: str, interaction: str) -> Filter | None:
        """The filter of what the interaction may reach (None: everything of the type); 403 when
        no scope grants the interaction on the type."""
        alternatives = self._alternatives(resource_type, interaction)
        if alternatives is None:
            return None
        if not alternatives:
            raise self._refusal(resource_type, interaction)
        return _any_of(alternatives)

    def _alternatives(
        self, resource_type: str, interaction: str, labels: bool = True
    ) -> list[tuple[list[str], list]] | None:
        """The conditions of each granting scope (ORed), each ANDed with the policy's (ABAC,
        labels unless `labels` is false, consent); None when everything is reachable."""
        alternatives = self._scope_alternatives(resource_type, interaction)
        if alternatives == []:
            return alternatives
        conditions, params = self.policy.conditions(resource_type, interaction, labels=labels)
        if not conditions:
            return alternatives
        if alternatives is None:
            return [(conditions, params)]
        return [([*own, *conditions], [*own_params, *params]) for own, own_params in alternatives]

    def _scope_alternatives(
        self, resource_type: str, interaction: str
    ) -> list[tuple[list[str], list]] | None:
        alternatives = self._own_record(resource_type, interaction)
        for scope in self.scopes.granting(resource_type, interaction):
            conditions = self._conditions(scope, resource_type)
            if conditions is None:
                continue
            if not conditions[0]:
                return None
            alternatives.append(conditions)
        return alternatives

    def _own_record(self, resource_type: str, interaction: str) -> list[tuple[list[str], list]]:
        """The `fhirUser` scope is "permission to retrieve information about the current
        logged-in user" (SMART App Launch 2.x, Quick Start): it reads the fhirUser resource
        (relative or absolute, its last two path segments name it), whatever else is granted."""
        fhir_user = self.context.fhir_user if self.context is not None else None
        if (
            not fhir_user
            or interaction not in ("read", "vread")
            or "fhirUser" not in self.scopes.context_scopes
        ):
            return []
        user_type, _, user_id = "/".join(fhir_user.rstrip("/").split("/")[-2:]).partition("/")
        return [(["r.resource_id = %s"], [user_id])] if user_type == resource_type and user_id else []

    def _conditions(self, scope: ResourceScope, resource_type: str) -> tuple[list[str], list] | None:
        """ANDed conditions of one scope on the type; None when it can reach nothing."""
        conditions, params = [], []
        if scope.level == "patient" and compartment.in_types(resource_type):
            if self.context.patient is None:
                return None  # patient-level access without a patient in context reaches nobody
            condition, condition_params = compartment.condition(resource_type, self.context.patient)
            conditions.append(condition)
            params += condition_params
        if scope.restriction:
            parsed = query.parse(resource_type, list(scope.restriction), sql.SUPPORTED_TYPES)
            if parsed.ignored:
                return None  # unevaluable (parse_scope refuses these): never widen, reach nothing
            restriction, restriction_params = sql.where(resource_type, parsed.clauses)
            conditions += restriction
            params += restriction_params
        return conditions, params

    def _refusal(self, resource_type: str, interaction: str) -> errors.FhirError:
        if self.scopes.allows(resource_type, interaction):
            return errors.forbidden(
                f"The access token's scopes for {interaction} of {resource_type} reach nothing"
                " (patient-level scopes need a patient in the launch context)"
            )
        return errors.forbidden(f"The access token grants no {interaction} of {resource_type}")

    def types_condition(self, interaction: str, type_sql: str, id_sql: str) -> tuple[str, list] | None:
        """For interactions over every type (system history, $everything, $meta): a condition on
        the (type, id) expressions, or None when every type is reachable without a filter.
        Types without any grant are left out; 403 only when no type at all is granted."""
        unrestricted, filtered, params = [], [], []
        for resource_type in sorted(r4().resource_types):
            alternatives = self._alternatives(resource_type, interaction, labels=False)
            if alternatives is None:
                unrestricted.append(resource_type)
            elif alternatives:
                condition, condition_params = _any_of(alternatives).on(resource_type, id_sql)
                filtered.append(f"({type_sql} = %s AND {condition})")
                params += [resource_type, *condition_params]
        if not unrestricted and not filtered:
            raise errors.forbidden(f"The access token grants no {interaction} of any resource type")
        labels = self.policy.label_condition(type_sql, id_sql)  # once, not per type
        if len(unrestricted) == len(r4().resource_types):
            return labels
        parts = [f"{type_sql} = ANY(%s)", *filtered]
        condition = "(" + " OR ".join(parts) + ")", [unrestricted, *params]
        if labels is None:
            return condition
        return f"({condition[0]} AND {labels[0]})", [*condition[1], *labels[1]]

    def reach(self, interaction: str) -> Callable[[str, str], tuple[str, list] | None]:
        """For sql.where: resources that chained criteria may look at (403 for a type the token
        cannot `interaction`), so a chain cannot test what the token may not see."""

        def condition(resource_type: str, alias: str) -> tuple[str, list] | None:
            found = self.require(resource_type, interaction)
            return None if found is None else found.on(resource_type, f"{alias}.resource_id")

        return condition

    # ----- instance level -----------------------------------------------------------------------
    def check_instance(
        self,
        resource_type: str,
        resource_id: str,
        interaction: str,
        *,
        writing: bool = False,
        flush: Callable[[], None] | None = None,
    ) -> None:
        """403 unless the current resource is within reach. A resource that does not exist
        passes (the interaction answers 404, or creates it); a deleted one passes for writes
        (update re-creates it, delete does nothing) but not for reads of its history: with the
        deletion the index no longer says whose it was. Writes lock the row, so what was
        checked stays true until the transaction ends. `flush` sends buffered writes first."""
        found = self.require(resource_type, interaction)
        if found is None:
            return
        if flush is not None:
            flush()
        lock = " FOR UPDATE OF r" if writing else ""
        with connection.cursor() as db:
            db.execute(
                f"SELECT r.deleted, coalesce(({found.sql}), false) FROM fhir_resource r"
                f" WHERE r.resource_type = %s AND r.resource_id = %s{lock}",
                [*found.params, resource_type, resource_id],
            )
            row = db.fetchone()
        if row is None or row[1] or (writing and row[0]):
            return
        raise errors.forbidden(f"{resource_type}/{resource_id} is outside what the access token grants")

    def visible(self, rows: list[Row], interaction: str) -> list[Row]:
        """The rows (of included resources) within reach; the others are dropped."""
        kept: set[tuple[str, str]] = set()
        for resource_type in {row[0] for row in rows}:
            ids = [row[1] for row in rows if row[0] == resource_type]
            alternatives = self._alternatives(resource_type, interaction)
            if alternatives is None:
                kept.update((resource_type, i) for i in ids)
            elif alternatives:
                kept.update((resource_type, i) for i in _reachable(resource_type, ids, _any_of(alternatives)))
        return [row for row in rows if (row[0], row[1]) in kept]


def _any_of(alternatives: list[tuple[list[str], list]]) -> Filter:
    sql_text = " OR ".join("(" + " AND ".join(conditions) + ")" for conditions, _ in alternatives)
    return Filter(f"({sql_text})", tuple(p for _, params in alternatives for p in params))


def _reachable(resource_type: str, ids: list[str], found: Filter) -> list[str]:
    with connection.cursor() as db:
        db.execute(
            "SELECT r.resource_id FROM fhir_resource r WHERE r.resource_type = %s"
            f" AND r.resource_id = ANY(%s) AND NOT r.deleted AND {found.sql}",
            [resource_type, ids, *found.params],
        )
        return [row[0] for row in db.fetchall()]


def access(request: HttpRequest) -> Access:
    """The access of the request's token (one per request and context, so the policy's data
    is loaded once). Without an auth context (the middleware sets one on every FHIR path but
    /metadata), nothing is reachable."""
    context = getattr(request, "auth_context", None)
    cached = getattr(request, "_fhir_access", None)
    if cached is None or cached.context is not context:
        cached = Access(context)
        request._fhir_access = cached
    return cached


_PLACEHOLDER = re.compile(r"%%|%s")


def named(condition: tuple[str, list], prefix: str) -> tuple[str, dict]:
    """A positional (%s) condition with named parameters (%(prefix_N)s), for statements that
    use names ($everything)."""
    text, params = condition
    names = iter(range(len(params)))

    def rename(match: re.Match) -> str:
        return match[0] if match[0] == "%%" else f"%({prefix}_{next(names)})s"

    return _PLACEHOLDER.sub(rename, text), {f"{prefix}_{i}": value for i, value in enumerate(params)}
