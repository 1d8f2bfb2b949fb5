"""`_text` and `_content` (http://hl7.org/fhir/R4/search.html#text): full-text search over the
narrative and over the whole resource, through PostgreSQL text search.

Each resource gets two documents in fhir_index_text, turned into a tsvector by the insert
(`to_tsvector('simple', ...)`: lowercased words, no stemming and no stop words, since clinical
text mixes languages and codes): `_text` is the narrative (`text.div`, tags stripped), `_content`
every string of the resource (narrative included). A search is `websearch_to_tsquery`: words
ANDed, `or`, `-word` and "quoted phrases" as on web search engines.

Never for the types with encrypted elements (Patient, RelatedPerson, Person): a plaintext text
index would undo their encryption, so they get no documents and a search on them is a 400.
"""

from __future__ import annotations

import html
import re

from fhirserver.storage import phi

FULL_TEXT = frozenset({"_text", "_content"})
MAX_DOCUMENT = 200_000  # characters; PostgreSQL's tsvector holds at most 1 MB
_TAG = re.compile(r"<[^>]*>")


def indexed(resource_type: str) -> bool:
    """Whether resources of this type get full-text documents."""
    return not phi.encrypted_elements(resource_type)


def documents(resource: dict) -> list[tuple[str, str]]:
    """(parameter, text) rows of a resource: its narrative and all of its strings."""
    if not indexed(resource["resourceType"]):
        return []
    found = []
    div = (resource.get("text") or {}).get("div")
    narrative = _strip(div) if isinstance(div, str) else ""
    if narrative:
        found.append(("_text", narrative[:MAX_DOCUMENT]))
    strings: list[str] = [narrative] if narrative else []
    _strings({k: v for k, v in resource.items() if k != "text"}, strings)
    content = " ".join(strings)
    if content:
        found.append(("_content", content[:MAX_DOCUMENT]))
    return found


def condition(value: str) -> tuple[str, list]:
    """The condition on a fhir_index_text row `i` for one search value."""
    return "i.document @@ websearch_to_tsquery('simple', %s)", [value]


def _strip(div: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", div)).split())


def _strings(value: object, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
