"""A resource version as stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class StoredResource:
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: str | None  # the JSON text as served; None for a deletion

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"


def version_of(etag: str) -> int | None:
    """The version in an ETag as clients send it: W/"3", "3" or 3 (None if it is none of those)."""
    tag = etag.strip()
    tag = tag[2:] if tag.startswith("W/") else tag
    tag = tag.strip('"')
    return int(tag) if tag.isdigit() else None
