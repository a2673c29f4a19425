"""One fetch per page across processes: a short Redis lease per (upstream, market,
timeframe, page). The upstream is in the key: a simulator's pages must never be taken for
Upbit's by a process of another upstream sharing the Redis.

The process that takes a page's lease fetches it and leaves the page in Redis for a short
while; a process that finds the lease taken waits for that result and uses it as if it had
fetched the page itself (it writes it to its store too: an upsert, so writing twice is
harmless, and the page is stored even if the fetcher dies right after publishing). The lease
is renewed while the fetch waits for the rate budget, and lapses within ``lease_s`` when its
holder dies, so a waiter then takes it over. Without Redis, every page is simply fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import msgspec
from redis.asyncio import Redis

from .._budget.redis_unusable import UNREACHABLE
from ..records import Candle
from .redis_lease import RedisLease

__all__ = ["RedisPageLeases"]

log = logging.getLogger("marketspine")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[Candle]).decode


class RedisPageLeases:
    """``PageLeases`` (see ``_store.backfill``) of the pages of ``upstream``, through the Redis
    keys ``{prefix}page:lease:{HOST}:KEY`` and ``{prefix}page:result:{HOST}:KEY`` (HOST:
    upstream's host and port). The Redis client stays the caller's to close."""

    def __init__(
        self,
        redis: Redis,
        *,
        upstream: str,
        prefix: str = "marketspine:",
        lease_s: float = 3.0,
        keep_s: float = 60.0,
        poll_s: float = 0.01,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._upstream = urlsplit(upstream).netloc.lower()
        self._lease_s = lease_s
        self._keep_ms = max(1, round(keep_s * 1000))
        self._poll_s = poll_s
        self.fetched = 0  # pages this process fetched under a lease
        self.shared = 0  # pages another process fetched for this one
        self.waits = 0  # times this process found a page's lease held by another
        self._unusable = False  # Redis failed the last lease: said once, until it works again

    async def fetch_once(
        self, key: str, fetch: Callable[[], Awaitable[list[Candle]]]
    ) -> tuple[list[Candle], bool]:
        """See ``PageLeases``. A Redis failure means fetching here (correct, maybe twice)."""
        named = f"{{{self._upstream}}}:{key}"
        lease = RedisLease(self._redis, f"{self._prefix}page:lease:{named}", lease_s=self._lease_s)
        result = f"{self._prefix}page:result:{named}"
        try:
            while True:
                cached = await self._redis.get(result)
                if cached is not None:
                    self.shared += 1
                    return _decode(cached if isinstance(cached, bytes) else cached.encode()), False
                taken = await lease.try_acquire()
                if self._unusable:  # a write went through (a read may pass a full Redis)
                    self._unusable = False
                    log.info("Redis usable again for page leases: each page fetched once again")
                if taken:
                    # The holder publishes before it releases: a result that appeared
                    # between our look and our lease is the page, not a reason to fetch.
                    cached = await self._redis.get(result)
                    if cached is None:
                        break
                    await lease.release()
                    self.shared += 1
                    return _decode(cached if isinstance(cached, bytes) else cached.encode()), False
                self.waits += 1
                await asyncio.sleep(self._poll_s)  # the holder publishes within a fetch
        except UNREACHABLE as exc:
            if not self._unusable:  # one line an outage, not one a page
                self._unusable = True
                log.warning(
                    "Redis unreachable for page leases (%s): fetching pages here until it "
                    "is back (another process may fetch the same page)",
                    exc,
                )
            return await fetch(), True

        async def fetch_and_publish() -> list[Candle]:
            page = await fetch()
            with contextlib.suppress(*UNREACHABLE):  # waiters then fetch it themselves
                await self._redis.set(result, _encode(page), px=self._keep_ms)
            return page

        # Renewed while the fetch waits for the rate budget; released once published.
        page = await lease.holding(fetch_and_publish)
        self.fetched += 1
        return page, True
