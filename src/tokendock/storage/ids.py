"""Ids a client names (batch, file, upload ids, list cursors) before they reach a query.

Every id TokenDock mints is a prefix and hex (`batch_…`, `file-…`, `upload_…`); a string
with anything else — a NUL, which PostgreSQL's text cannot hold and asyncpg refuses with an
error (a 500), or any other byte — names nothing, so the lookup finds nothing (a 404)
without asking the database."""

from __future__ import annotations

import re

ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def plain(text: str | None) -> bool:
    """Whether `text` could be an id TokenDock minted."""
    return text is not None and ID.fullmatch(text) is not None
