"""Credentials at rest: sealed with the tenant's PHI key ring (fhirserver.storage.keyring).

The associated data names the table, row and field, so a sealed value copied into another row,
field or tenant does not open. Plaintext lives only in memory while a sync runs; nothing here
logs or raises with a value.
"""

from __future__ import annotations

from django.db import models

from fhirserver.storage import keyring


def _associated(row: models.Model, field: str) -> bytes:
    return f"{row._meta.db_table}/{row.pk}/{field}".encode()


def put(row: models.Model, field: str, plaintext: str, schema: str | None = None) -> None:
    """Set `row.<field>` to the sealed `plaintext` (empty stays empty); the caller saves.
    `schema` names the tenant when the calling thread's connection is not in it."""
    sealed = keyring.seal(plaintext.encode(), _associated(row, field), schema) if plaintext else ""
    setattr(row, field, sealed)


def get(row: models.Model, field: str) -> str:
    """The plaintext of `row.<field>`, or "" when it holds nothing."""
    token = getattr(row, field)
    return keyring.open_sealed(token, _associated(row, field)).decode() if token else ""
