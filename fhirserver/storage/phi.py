"""Field-level encryption of PHI in stored JSON (ARCHITECTURE.md, "PHI encryption").

settings.PHI_ENCRYPTED_ELEMENTS names, per resource type, the top-level elements stored
encrypted: each becomes a ciphertext token (fhirserver.storage.keyring) in place of its value,
in the current row and in every history version. For a repeating element limited to some items
(identifiers of SSN-like systems), only those items become tokens. The associated data of each
token is `Type/id/element` (with the item's position for an item), so a token moved to another
resource, element or tenant fails to decrypt instead of showing someone else's data.

Writes call `seal`; every path that serves stored content calls `reveal`. Types without
encrypted elements pass through untouched, which keeps most reads free of any parsing.
"""

from __future__ import annotations

import logging

import orjson
from django.conf import settings

from fhirserver import errors
from fhirserver.storage import keyring

log = logging.getLogger(__name__)


def encrypted_elements(resource_type: str) -> dict[str, object]:
    """element -> True (all of it) or an item filter {"systems": [...], "type_codes": [...],
    "urls": [...]} (identifiers by system or type code, extensions by url)."""
    return settings.PHI_ENCRYPTED_ELEMENTS.get(resource_type, {})


def _associated(resource_type: str, resource_id: str, path: str) -> bytes:
    return f"{resource_type}/{resource_id}/{path}".encode()


def _item_selected(item: object, rule: dict) -> bool:
    if not isinstance(item, dict):
        return False
    if item.get("system") in rule.get("systems", ()) or item.get("url") in rule.get("urls", ()):
        return True
    codings = (item.get("type") or {}).get("coding") or []
    return any(coding.get("code") in rule.get("type_codes", ()) for coding in codings)


def seal(body: dict, content: str) -> str:
    """The text to store for a resource whose served JSON is `content` (parsed: `body`)."""
    resource_type, resource_id = body["resourceType"], body["id"]
    if keyring.PREFIX in content:
        _refuse_lookalikes(body)
    elements = encrypted_elements(resource_type)
    present = [name for name in elements if name in body]
    if not present:
        return content
    stored = dict(body)
    for name in present:
        rule, value = elements[name], body[name]
        if rule is True:
            stored[name] = keyring.seal(orjson.dumps(value), _associated(resource_type, resource_id, name))
        elif isinstance(value, list):
            stored[name] = [
                keyring.seal(orjson.dumps(item), _associated(resource_type, resource_id, f"{name}[{i}]"))
                if _item_selected(item, rule)
                else item
                for i, item in enumerate(value)
            ]
    return orjson.dumps(stored).decode()


def _refuse_lookalikes(body: dict) -> None:
    """A client value shaped like a ciphertext token would be taken for one when read back."""
    for name, value in body.items():
        if keyring.is_sealed(value) or (isinstance(value, list) and any(map(keyring.is_sealed, value))):
            raise errors.bad_request(
                f"{body['resourceType']}.{name}: values starting with '{keyring.PREFIX}' are reserved",
                expression=f"{body['resourceType']}.{name}",
            )


def reveal(resource_type: str, resource_id: str, content: str) -> str:
    """The stored JSON text of a resource as it is served: its encrypted elements decrypted.

    Decrypts whatever tokens the stored row holds, whether or not the policy still names the
    element, so narrowing the policy never makes data unreadable. A token that does not open
    (tampered with, moved, or its key gone) is a server error: the data must not be guessed.
    """
    if keyring.PREFIX not in content:
        return content
    resource = orjson.loads(content)
    try:
        for name, value in resource.items():
            if keyring.is_sealed(value):
                resource[name] = orjson.loads(
                    keyring.open_sealed(value, _associated(resource_type, resource_id, name))
                )
            elif isinstance(value, list) and any(keyring.is_sealed(item) for item in value):
                resource[name] = [
                    _open_item(resource_type, resource_id, name, i, v) for i, v in enumerate(value)
                ]
    except keyring.UndecryptableError as exc:
        log.error("PHI of %s/%s cannot be decrypted: %s", resource_type, resource_id, exc)
        raise errors.FhirError.single(500, "exception", "Stored data could not be decrypted") from None
    return orjson.dumps(resource).decode()


def _open_item(resource_type: str, resource_id: str, name: str, index: int, item: object) -> object:
    if not keyring.is_sealed(item):
        return item
    return orjson.loads(
        keyring.open_sealed(item, _associated(resource_type, resource_id, f"{name}[{index}]"))
    )


def needs_resealing(resource_type: str, content: str) -> bool:
    """Whether a stored row holds a policy element in plaintext or a token under an old key:
    what `manage.py rotate_phi_key` rewrites."""
    resource = orjson.loads(content)
    current = keyring.current_key_id()
    for name, rule in encrypted_elements(resource_type).items():
        value = resource.get(name)
        if value is None:
            continue
        if rule is True:
            values = [value]
        else:
            values = [item for item in value if keyring.is_sealed(item) or _item_selected(item, rule)]
        for item in values:
            if not keyring.is_sealed(item) or keyring.sealed_key_id(item) != current:
                return True
    return False
