"""RedisLease on the real Redis: held while its work runs, given back when the work ends."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._budget.redis import connect_redis
from marketspine._store.redis_lease import RedisLease


async def test_the_lease_is_renewed_while_the_work_runs_and_released_after(
    redis_space: RedisSpace,
) -> None:
    redis = connect_redis(redis_space.url)
    key = f"{redis_space.prefix}lease"
    try:
        # Renewed every 0.2 s: a lapse takes a renewal 0.4 s late, not 0.1 s (a busy machine)
        lease = RedisLease(redis, key, lease_s=0.6)
        assert await lease.try_acquire()

        async def work() -> str:
            await asyncio.sleep(1.3)  # more than twice the lease: renewals kept it
            assert await redis.get(key) is not None
            assert not await RedisLease(redis, key).try_acquire()
            return "done"

        assert await lease.holding(work) == "done"
        assert await redis.get(key) is None
    finally:
        await redis.aclose()


async def test_work_that_ends_as_a_renewal_is_written_still_releases_the_lease(
    redis_space: RedisSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Python 3.11, redis-py writes a command inside asyncio.wait_for, which returns the
    # finished write instead of raising when the task is cancelled at that very moment. The
    # work below ends (and cancels the renewer) just as a renewal's write finishes: a
    # renewer stopped by cancellation alone went on renewing, and `holding` never returned
    # (a collector hung so, with every other process waiting for its page).
    redis = connect_redis(redis_space.url)
    key = f"{redis_space.prefix}lease"
    written = asyncio.Event()
    real_drain = asyncio.StreamWriter.drain

    async def drain(writer: asyncio.StreamWriter) -> None:
        await real_drain(writer)
        written.set()  # wakes the work before the write's own waiter is told

    try:
        lease = RedisLease(redis, key, lease_s=0.15)
        assert await lease.try_acquire()

        async def work() -> str:
            monkeypatch.setattr(asyncio.StreamWriter, "drain", drain)
            await written.wait()  # the first renewal was just written
            monkeypatch.undo()
            return "done"

        holding = asyncio.create_task(lease.holding(work))
        finished, _ = await asyncio.wait({holding}, timeout=5)
        if not finished:
            holding.cancel()  # not awaited: the stray renewer may swallow this one too
            pytest.fail("holding() did not return: the renewer kept the lease")
        assert holding.result() == "done"
        check = Redis.from_url(redis_space.url)
        try:
            assert await check.get(key) is None  # released, not renewed on
        finally:
            await check.aclose()
    finally:
        await redis.aclose()
