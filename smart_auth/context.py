"""The one authorization context every handler sees, whatever the auth mode."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuthContext:
    user: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    patient: str | None = None
    tenant: str | None = None


def development_context(tenant: str) -> AuthContext:
    """AUTH_MODE=development: everything allowed, as an administrator (refused unless DEBUG)."""
    return AuthContext(
        user="development", roles=frozenset({"admin"}), scopes=frozenset({"system/*.*"}), tenant=tenant
    )
