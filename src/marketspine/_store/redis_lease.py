"""A lease on one Redis key: taken with ``SET NX PX``, renewed while its holder works, given
back only by its holder (a token compared in a script), lapsing by itself when the holder
dies. The warmup takes one so that one process per refresh period calls upstream; the
page leases take one per page.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from .._budget.redis_unusable import UNREACHABLE

__all__ = ["RELEASE_IF_HELD", "RedisLease"]

T = TypeVar("T")

# What a dead or unreachable Redis raises (the caller then works without the lease).
# Delete the lease KEYS[1] only if ARGV[1] (the caller's token) still holds it.
RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisLease:
    """The lease ``key`` for ``lease_s`` at a time, held by this object's token. The Redis
    client stays the caller's to close. Raises what Redis raises (see ``UNREACHABLE``)."""

    def __init__(self, redis: Redis, key: str, *, lease_s: float = 10.0) -> None:
        self.key = key
        self._redis = redis
        self._lease_ms = max(1, round(lease_s * 1000))
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._release = redis.register_script(RELEASE_IF_HELD)
        self._renew = redis.register_script(_RENEW)

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this object holds it now."""
        return bool(await self._redis.set(self.key, self._token, nx=True, px=self._lease_ms))

    async def release(self) -> None:
        """Give the lease back, if this object still holds it."""
        await self._release(keys=[self.key], args=[self._token])

    async def holding(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` while renewing the held lease every third of its time, then release
        it (also when ``work`` fails). A renewal Redis refuses only ends the renewing."""
        # The renewer ends on this flag, not on its cancellation alone: on Python 3.11 a
        # cancel that lands just as redis-py's write of a renewal finishes is swallowed
        # (asyncio.wait_for returns the finished write), and a renewer that went on would
        # keep the lease, and this call, alive for ever (every other process waiting too).
        done = asyncio.Event()

        async def renew() -> None:
            while not done.is_set():
                await asyncio.sleep(self._lease_ms / 3000)
                if done.is_set():
                    return
                try:
                    if not await self._renew(keys=[self.key], args=[self._token, self._lease_ms]):
                        return  # lapsed and taken by another: nothing left to renew
                except UNREACHABLE:
                    return

        try:
            async with asyncio.TaskGroup() as group:
                renewer = group.create_task(renew())
                try:
                    return await work()
                finally:
                    done.set()
                    renewer.cancel()
        finally:
            with contextlib.suppress(*UNREACHABLE):  # it lapses by itself
                await self.release()
