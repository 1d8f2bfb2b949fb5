"""SMART on FHIR scopes, v1 and v2 grammars (SMART App Launch 2.x, "Scopes and Launch Context":
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

A resource scope is `<patient|user|system>/<Type|*>.<permissions>[?<restriction>]`:

- v2 permissions are a non-empty subset of `cruds`, letters in that order, each at most once;
  v1 `read`, `write` and `*` mean `rs`, `cud` and `cruds` ("Scopes for requesting clinical data").
- A v2 scope may end in `?param=value&...`: search parameters that limit the scope to the
  resources matching all of them ("Finer-grained resource constraints using search parameters").

Context and identity scopes (`openid`, `launch/patient`, ...) are recognised and grant no resource
access. Anything else is invalid: the token endpoint answers `invalid_scope` for what `parse`
refuses. Enforcement on the FHIR API is in fhirserver.api.authorization.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl

from fhirserver import errors
from fhirserver.registry import r4
from fhirserver.search import query, sql
from smart_auth.context import AuthContext

PERMISSIONS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
LEVELS = ("patient", "user", "system")
CONTEXT_SCOPES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    }
)
# The FHIR interactions each permission covers (the table under "Scopes for requesting clinical
# data"): `r` is instance-level only, type- and system-level history go with search.
INTERACTION_PERMISSION = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search-type": "s",
    "search-system": "s",
    "search-compartment": "s",
    "history-type": "s",
    "history-system": "s",
}
_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(?:\?(.*))?$", re.S)
_V2_PERMISSIONS = re.compile(r"^c?r?u?d?s?$")
# Parameters defined on Resource apply to every type, so they are the only ones a wildcard scope
# (`patient/*.rs?_tag=...`) may be restricted by.
_WILDCARD_TYPE = "Resource"


class InvalidScope(ValueError):
    """A scope string that is neither a SMART resource scope nor a known context scope."""


@dataclass(frozen=True)
class ContextScope:
    """A launch-context, identity or refresh scope: it grants no access to resources."""

    name: str


@dataclass(frozen=True)
class ResourceScope:
    level: str  # patient | user | system
    resource_type: str  # a resource type, or "*"
    permissions: frozenset[str]  # letters of "cruds"
    restriction: tuple[tuple[str, str], ...] = ()  # search parameters, decoded; () = none

    def covers(self, resource_type: str, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in ("*", resource_type)


Scope = ResourceScope | ContextScope


def parse_scope(text: str) -> Scope:
    """One scope string, or InvalidScope saying why it is not one."""
    if text in CONTEXT_SCOPES:
        return ContextScope(text)
    match = _RESOURCE_SCOPE.match(text)
    if match is None:
        raise InvalidScope(f"'{text}' is not a SMART scope")
    level, resource_type, access, restriction = match.groups()
    if resource_type != "*" and not r4().is_resource_type(resource_type):
        raise InvalidScope(f"'{text}': '{resource_type}' is not an R4 resource type")
    permissions = _permissions(text, access, restricted=restriction is not None)
    pairs = _restriction(text, resource_type, restriction) if restriction is not None else ()
    return ResourceScope(level, resource_type, permissions, pairs)


def _permissions(text: str, access: str, restricted: bool) -> frozenset[str]:
    if access in V1_PERMISSIONS:
        if restricted:
            raise InvalidScope(f"'{text}': search-parameter restrictions need v2 permissions (cruds)")
        return frozenset(V1_PERMISSIONS[access])
    # "Scope requests with undefined or out of order interactions MAY be ... rejected" (.dus).
    if not access or not _V2_PERMISSIONS.match(access):
        raise InvalidScope(f"'{text}': permissions must be read, write, * or letters of cruds in order")
    return frozenset(access)


def _restriction(text: str, resource_type: str, raw: str) -> tuple[tuple[str, str], ...]:
    """The restriction's parameters, checked the way search will evaluate them: a parameter
    search would ignore must not be granted, as ignoring it would widen the scope."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = []
    if not pairs:
        raise InvalidScope(f"'{text}': the restriction must be param=value pairs joined by &")
    for name, value in pairs:
        if not value or name.split(":", 1)[0] in query.CONTROL:
            raise InvalidScope(f"'{text}': '{name}' cannot restrict a scope")
    search_type = _WILDCARD_TYPE if resource_type == "*" else resource_type
    if resource_type == "*" and any(not _is_resource_parameter(name) for name, _ in pairs):
        raise InvalidScope(f"'{text}': a wildcard scope can only be restricted by parameters of Resource")
    try:
        parsed = query.parse(search_type, pairs, sql.SUPPORTED_TYPES)
    except errors.FhirError as exc:
        raise InvalidScope(f"'{text}': {exc}") from None
    if parsed.ignored:
        raise InvalidScope(f"'{text}': unsupported search parameters {', '.join(sorted(parsed.ignored))}")
    return tuple(pairs)


def _is_resource_parameter(name: str) -> bool:
    code = name.split(":", 1)[0]
    return any(sp.code == code and _WILDCARD_TYPE in sp.base for sp in r4().search_parameters)


@dataclass(frozen=True)
class ScopeSet:
    """Granted scopes: a resource interaction is allowed when any resource scope covers it."""

    resource_scopes: tuple[ResourceScope, ...] = ()
    context_scopes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, scopes: Iterable[Scope]) -> ScopeSet:
        resource, context = [], set()
        for scope in scopes:
            if isinstance(scope, ContextScope):
                context.add(scope.name)
            elif scope not in resource:
                resource.append(scope)
        return cls(tuple(resource), frozenset(context))

    def granting(self, resource_type: str, interaction: str) -> tuple[ResourceScope, ...]:
        """The scopes that allow `interaction` (see INTERACTION_PERMISSION) on the type."""
        permission = INTERACTION_PERMISSION[interaction]
        return tuple(s for s in self.resource_scopes if s.covers(resource_type, permission))

    def allows(self, resource_type: str, interaction: str) -> bool:
        return bool(self.granting(resource_type, interaction))


def parse(scope_string: str) -> ScopeSet:
    """A space-separated scope string (OAuth 2.0, RFC 6749 3.3), strictly: InvalidScope on any
    malformed scope. For the authorization server."""
    return ScopeSet.of(parse_scope(text) for text in scope_string.split())


@lru_cache(maxsize=1024)
def granted(scopes: frozenset[str]) -> ScopeSet:
    """The scopes of a token, parsed once per distinct set (AuthContext.scopes is hashable).

    Lenient: a scope that is not SMART grants nothing rather than failing the request, since
    an OAuth token may carry scopes of other APIs (RFC 6749 3.3)."""
    parsed = []
    for text in scopes:
        try:
            parsed.append(parse_scope(text))
        except InvalidScope:
            continue
    return ScopeSet.of(parsed)


def is_subset(requested: str, granted_scopes: str) -> bool:
    """Whether every scope of `requested` is within `granted_scopes` (a refresh may narrow
    scopes, never widen them). Permissions may be spread over several granted scopes
    ("Scope Equivalence": `Observation.rs` = `Observation.r Observation.s`)."""
    wanted, held = parse(requested), parse(granted_scopes)
    if not wanted.context_scopes <= held.context_scopes:
        return False
    return all(
        any(_within(scope, permission, grant) for grant in held.resource_scopes)
        for scope in wanted.resource_scopes
        for permission in scope.permissions
    )


def _within(scope: ResourceScope, permission: str, grant: ResourceScope) -> bool:
    """One permission of `scope` is within `grant`: same level, the same or a wildcard type, and
    a restriction at least as narrow (restriction parameters are ANDed, so more is narrower)."""
    return (
        grant.level == scope.level
        and permission in grant.permissions
        and grant.resource_type in ("*", scope.resource_type)
        and set(grant.restriction) <= set(scope.restriction)
    )


def roles_from_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Roles implied by scopes, for tokens without an explicit role: `admin` for unrestricted
    `user/*.*` or `system/*.*` (any grammar), `clinician` for other user-level scopes, `patient`
    for patient-level scopes, `system` for other system-level (backend service) scopes."""
    roles = set()
    for scope in granted(frozenset(scopes)).resource_scopes:
        full = scope.resource_type == "*" and scope.permissions == frozenset(PERMISSIONS)
        if full and not scope.restriction and scope.level != "patient":
            roles.add("admin")
        elif scope.level == "user":
            roles.add("clinician")
        else:
            roles.add(scope.level)
    return frozenset(roles)


def require_role(context: AuthContext, role: str) -> None:
    """403 unless the caller has `role` (its explicit roles, else those its scopes imply);
    an administrator has every role."""
    roles = context.roles or roles_from_scopes(context.scopes)
    if role not in roles and "admin" not in roles:
        raise errors.forbidden(f"This needs the {role} role")
