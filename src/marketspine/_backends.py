"""What a ``--db`` or ``--redis`` value names, told without importing the drivers (psycopg
and redis load only when a command uses them, so start-up stays fast)."""

from __future__ import annotations

import re
import weakref
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ratebudget import RateBudget
    from ._store import CandleStore

__all__ = ["enter_owned", "is_postgres_url", "redact_url", "resolve_backends"]

# What resolve_backends made (and so Spine must open and close); weak: it does not keep them.
_OWNED: weakref.WeakSet[object] = weakref.WeakSet()


def is_postgres_url(db: object) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` (a ``--db`` naming PostgreSQL)."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def resolve_backends(
    db: str | Path | CandleStore | None, budget: RateBudget | None, redis: str | None
) -> tuple[str | Path | CandleStore | None, RateBudget | None]:
    """``Spine(db=..., budget=..., redis=...)``: a ``postgresql://`` ``db`` becomes a
    ``PostgresStore``, ``redis`` (when no ``budget`` is given) a ``RedisRateBudget``. Neither
    does I/O before ``enter_owned``; both are the Spine's to close."""
    if isinstance(db, str) and is_postgres_url(db):
        from ._pgstore import PostgresStore

        db = PostgresStore(db)
        _OWNED.add(db)
    if redis is not None and budget is None:
        from ._redis_budget import RedisRateBudget

        budget = RedisRateBudget(redis)
        _OWNED.add(budget)
    return db, budget


async def enter_owned(stack: AsyncExitStack, *things: object) -> None:
    """Open those of ``things`` that ``resolve_backends`` made, closing them with ``stack``."""
    for thing in things:
        if thing in _OWNED:
            await stack.enter_async_context(thing)  # type: ignore[arg-type]
