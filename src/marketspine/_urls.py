"""What a ``--db`` value names, and URLs fit to show (no driver imported here)."""

from __future__ import annotations

import re

__all__ = ["is_postgres_url", "redact_url"]


def is_postgres_url(db: object) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` (a ``--db`` naming PostgreSQL)."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
