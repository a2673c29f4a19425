"""What processes sharing one Redis share: the rate budget and the page leases, on one
connection pool (``collect --redis``, ``Spine(redis=...)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ._page_lease import RedisPageLeases
from ._redis_budget import RedisRateBudget, connect_redis

__all__ = ["Shared", "open_shared"]


@dataclass(frozen=True)
class Shared:
    budget: RedisRateBudget
    leases: RedisPageLeases


@asynccontextmanager
async def open_shared(url: str, *, prefix: str = "marketspine:") -> AsyncIterator[Shared]:
    """The shared budget and page leases on the Redis at ``url``; closes them on exit.

    Raises InvalidRequestError for a URL that is not a Redis URL. An unreachable Redis is
    no error: the budget falls back to a local share and pages are fetched here.
    """
    client = connect_redis(url)
    try:
        async with RedisRateBudget(client, prefix=prefix) as budget:
            yield Shared(budget, RedisPageLeases(client, prefix=prefix))
    finally:
        await client.aclose()
