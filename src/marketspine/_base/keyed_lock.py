"""One asyncio lock per key that exists only while someone holds it or waits for it.

A lock kept per (market, timeframe) for good grows with every series ever asked for (all
markets × all timeframes in a long-running server) and lives outside the memory budget;
here the table holds only the keys in use, so its size is bounded by the requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

__all__ = ["KeyedLock"]


class KeyedLock:
    """Mutual exclusion per key: ``async with locks.hold(key)`` lets one holder of ``key``
    at a time in, in arrival order; different keys never wait for each other. Not
    thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        # key -> (its lock, how many hold it or wait for it)
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """How many keys are held or waited for right now."""
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            # Also when cancelled while waiting: the last one out drops the key.
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
