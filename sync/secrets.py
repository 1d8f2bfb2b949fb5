"""Credentials at rest: sealed with the tenant's PHI key ring (fhirserver.storage.keyring).

The associated data names the table, row and field, so a sealed value copied into another row,
field or tenant does not open. Plaintext lives only in memory while a sync runs; nothing here
logs or raises with a value.
"""

from __future__ import annotations

from django.db import models, transaction

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


def reseal_all() -> int:
    """Re-seal every credential of the current tenant that is not under the current master key
    (`rotate_phi_key` runs this), so that a retired key can be dropped. Rows are locked while
    they are rewritten: a sync storing a rotated token meanwhile waits, then writes the newer one.
    Returns how many values were re-sealed."""
    from sync.models import LinkedPatient, Provider  # the models do not need this module

    current = keyring.current_key_id()
    done = 0
    for model, fields in (
        (Provider, ("client_secret", "private_key")),
        (LinkedPatient, ("refresh_token", "access_token")),
    ):
        with transaction.atomic():
            for row in model.objects.select_for_update().order_by("pk"):
                stale = [
                    name
                    for name in fields
                    if getattr(row, name) and keyring.sealed_key_id(getattr(row, name)) != current
                ]
                for name in stale:
                    put(row, name, get(row, name))
                if stale:
                    row.save(update_fields=stale)
                    done += len(stale)
    return done
