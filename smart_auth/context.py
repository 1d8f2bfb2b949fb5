"""The one authorization context every handler sees, whatever the auth mode."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuthContext:
    """Who is calling and what they were granted.

    `scopes` are SMART scope strings as granted (v1 `patient/*.read` or v2 `patient/Observation.rs?..`);
    `patient`/`encounter` are ids from the launch context; `fhir_user` is a relative reference
    such as `Practitioner/9`. `user` is None for backend-services (system) clients.
    `break_glass` is set by smart_auth.break_glass for a request that broke the glass.
    """

    user: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    client_id: str | None = None
    tenant: str | None = None
    break_glass: bool = False


def development_context(tenant: str) -> AuthContext:
    """AUTH_MODE=development: everything allowed, as an administrator (refused unless DEBUG)."""
    return AuthContext(
        user="development", roles=frozenset({"admin"}), scopes=frozenset({"system/*.*"}), tenant=tenant
    )
