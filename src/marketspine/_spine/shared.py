"""What processes sharing one Redis share: the rate budget, the page leases and the exchange
catalog, on one connection pool (``collect --redis``, ``Spine(redis=...)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Self

from redis.asyncio import Redis

from .._budget.redis import RedisRateBudget, connect_redis
from .._store.page_lease import RedisPageLeases
from .catalog_redis import RedisCatalog

__all__ = ["Shared", "open_shared"]


@dataclass(frozen=True, eq=False)  # one per connection: compared and hashed by identity
class Shared:
    budget: RedisRateBudget
    leases: RedisPageLeases
    catalog: RedisCatalog
    redis: Redis

    @classmethod
    def connect(
        cls, url: str, *, upstream: str, prefix: str | None = None, expect_urgent: bool = False
    ) -> Shared:
        """The shared parts on the Redis at ``url`` for a process of ``upstream`` (its pages
        are leased apart from other upstreams'), without I/O yet. Keys live under
        ``prefix`` (default ``marketspine:``; the catalog then keeps the design documents'
        own keys, ``market:info:{exchange}`` ...). ``expect_urgent``: the process may send
        urgent requests at any moment (Spine: every process's LOW keeps the budget's reserve
        for it; ``collect`` does not). Raises InvalidRequestError for a URL that is not a
        Redis URL."""
        client = connect_redis(url)
        own = "marketspine:" if prefix is None else prefix
        return cls(
            RedisRateBudget(client, prefix=own, expect_urgent=expect_urgent),
            RedisPageLeases(client, upstream=upstream, prefix=own),
            RedisCatalog(client, prefix=prefix or "", lease_prefix=own),
            client,
        )

    async def __aenter__(self) -> Self:
        await self.budget.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.budget.aclose()
        finally:
            await self.redis.aclose()


@asynccontextmanager
async def open_shared(
    url: str, *, upstream: str, prefix: str | None = None
) -> AsyncIterator[Shared]:
    """The shared budget, page leases and catalog on the Redis at ``url``; closes them on
    exit (see ``Shared.connect``). An unreachable Redis is no error: the budget falls back to
    a local share, pages are fetched here and the warmup is made here."""
    async with Shared.connect(url, upstream=upstream, prefix=prefix) as shared:
        yield shared
