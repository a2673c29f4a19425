"""What a ``--db``, ``--upstream`` or ``--redis`` value names, and URLs fit to show (no
driver imported here)."""

from __future__ import annotations

import re

from ..errors import InvalidRequestError

__all__ = [
    "check_db",
    "check_redis",
    "check_upstream",
    "is_postgres_url",
    "redact_url",
    "without_db_urls",
]

# "scheme://...": a URL, never an SQLite file name a user meant (a path holding "://"
# would become a folder named "scheme:" beside the command).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_postgres_url(db: object) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` (a ``--db`` naming PostgreSQL)."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def check_db(db: object, name: str = "db") -> None:
    """Refuse a ``db`` string that is a URL of anything but PostgreSQL (``sqlite:///x.db``,
    ``mysql://...``): it would otherwise be taken as a relative file path and create
    folders named after the scheme. Raises InvalidRequestError naming ``name``."""
    if isinstance(db, str) and _URL.match(db) and not is_postgres_url(db):
        raise InvalidRequestError(
            f"invalid {name} {redact_url(db)!r}: expected an SQLite file path or a "
            "postgresql://USER@HOST:PORT/DB URL"
        )


def check_upstream(upstream: object, name: str = "upstream", also: str = "") -> None:
    """Refuse an ``upstream`` that is not an http(s):// URL before any request is made
    (httpx would refuse it only after the retries, as a connection failure).
    Raises InvalidRequestError naming ``name`` and what is accepted (``also`` adds to it)."""
    if (
        not isinstance(upstream, str)
        or not upstream.startswith(("http://", "https://"))
        or upstream in ("http://", "https://")
    ):
        shown = repr(upstream)
        if not isinstance(upstream, str):
            shown += f" ({type(upstream).__name__})"
        raise InvalidRequestError(
            f"invalid {name} {shown}: expected an http(s):// URL such as "
            f"https://api.upbit.com or http://127.0.0.1:8765{also}"
        )


def check_redis(url: object, name: str = "--redis") -> None:
    """Raise InvalidRequestError unless ``url`` names a Redis (redis://, rediss://, unix://)."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidRequestError(
            f"{name} {url!r} is not a Redis URL: expected redis://HOST:PORT[/DB] "
            "(or rediss:// or unix://)"
        )


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# Up to a space or quote, never ending on the punctuation of the sentence around it.
_DB_URL = re.compile(
    r"\b(?:postgres(?:ql)?|rediss?)://(?:[^\s'\"]*[^\s'\".,:;)\]])?", re.IGNORECASE
)


def without_db_urls(text: str) -> str:
    """``text`` with every database or Redis URL in it replaced by ``<database URL>``: for
    answers to clients, who need to know that the database failed, never where it is or
    who logs in to it (the log keeps the redacted URL for the operator)."""
    return _DB_URL.sub("<database URL>", text)
