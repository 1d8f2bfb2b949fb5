"""What a tenant slug may be. It appears in URLs (/t/<slug>/), host names (<slug>.<parent>)
and, with '-' turned into '_', as the PostgreSQL schema name, so it must be safe in all three."""

import re

MAX_LENGTH = 63  # one DNS label; also PostgreSQL's identifier limit
SLUG_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
RESERVED = frozenset({"public", "information_schema", "www", "admin", "api", "static"})


class InvalidSlug(ValueError):
    pass


def validate_slug(slug: str) -> str:
    if not slug:
        raise InvalidSlug("tenant slug is empty")
    if len(slug) > MAX_LENGTH:
        raise InvalidSlug(f"tenant slug is {len(slug)} characters long; at most {MAX_LENGTH} are allowed")
    if not SLUG_PATTERN.match(slug) or "--" in slug:
        raise InvalidSlug(
            f"tenant slug {slug!r} is invalid: use lowercase letters, digits and single hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    if slug in RESERVED or slug.startswith("pg-"):
        raise InvalidSlug(f"tenant slug {slug!r} is reserved")
    return slug


def schema_name_for(slug: str) -> str:
    return validate_slug(slug).replace("-", "_")
