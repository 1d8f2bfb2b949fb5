"""Field-level encryption of PHI in stored JSON (ARCHITECTURE.md, "PHI encryption").

Every path that serves stored content passes it through `reveal`.
"""

from __future__ import annotations


def reveal(resource_type: str, resource_id: str, content: str) -> str:
    """The stored JSON text of a resource as it is served: its encrypted elements decrypted."""
    return content
