"""The store and budget a ``Spine(db="postgresql://...", redis="redis://...")`` asks for,
made without importing the drivers (psycopg and redis load only when used, so start-up
stays fast)."""

from __future__ import annotations

import weakref
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from .._base.extras import need
from .._base.urls import check_db, is_postgres_url

if TYPE_CHECKING:
    from .._budget.rules import RateBudget
    from .._store.sqlite import CandleStore
    from .shared import Shared

__all__ = ["enter_owned", "resolve_backends"]

# What resolve_backends made (and so Spine must open and close); weak: it does not keep them.
_OWNED: weakref.WeakSet[object] = weakref.WeakSet()


def resolve_backends(
    db: str | Path | CandleStore | None,
    budget: RateBudget | None,
    redis: str | None,
    prefix: str | None = None,
    *,
    upstream: str,
) -> tuple[str | Path | CandleStore | None, RateBudget | None, Shared | None]:
    """``Spine(upstream, db=..., budget=..., redis=..., redis_prefix=...)``: a
    ``postgresql://`` ``db`` becomes a ``PostgresStore``, ``redis`` the ``Shared`` parts of
    ``upstream`` (its ``RedisRateBudget`` the budget, when none is given). None does I/O
    before ``enter_owned``; all are the Spine's to close. Raises InvalidRequestError for a
    ``db`` URL of another database."""
    check_db(db)
    if isinstance(db, str) and is_postgres_url(db):
        from .._store.postgres import PostgresStore

        db = PostgresStore(db)
        _OWNED.add(db)
    shared = None
    if redis is not None:
        need("redis")
        from .shared import Shared

        # A Spine answers its callers' requests at any moment: LOW keeps the reserve for them.
        shared = Shared.connect(redis, upstream=upstream, prefix=prefix, expect_urgent=True)
        _OWNED.add(shared)
        budget = shared.budget if budget is None else budget
    return db, budget, shared


async def enter_owned(stack: AsyncExitStack, *things: object) -> None:
    """Open those of ``things`` that ``resolve_backends`` made, closing them with ``stack``."""
    for thing in things:
        if thing in _OWNED:
            await stack.enter_async_context(thing)  # type: ignore[arg-type]
