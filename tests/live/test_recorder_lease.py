"""The recorder lease on the machine's Redis: one holder at a time; the other waits, takes
it with a newer generation once the holder stopped renewing, and the old holder then learns
that it lost it. A clean exit releases it at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._live.recorder_lease import RecorderLease, recorder_name


def lease(space: RedisSpace, name: str = "db1") -> RecorderLease:
    return RecorderLease(space.url, name, prefix=space.prefix, lease_s=1.0, poll_s=0.05)


async def lease_state(space: RedisSpace, name: str = "db1") -> str:
    """Who holds the lease ``name`` and for how much longer, as Redis says."""
    key = f"{space.prefix}record:{{{name}}}:lease"
    async with Redis.from_url(space.url) as redis:
        return f"{key} = {await redis.get(key)!r}, {await redis.pttl(key)} ms left"


async def test_the_standby_takes_over_once_the_holder_stops_renewing(
    redis_space: RedisSpace,
) -> None:
    stop = asyncio.Event()
    async with lease(redis_space) as first, lease(redis_space) as second:
        held = await first.acquire(stop)
        assert held is not None
        async with asyncio.TaskGroup() as group:
            waiting = group.create_task(second.acquire(stop))
            keeping = group.create_task(first.keep(held))
            await asyncio.sleep(2.0)  # well past the lease's 1 s: renewal keeps it held
            assert not waiting.done()
            keeping.cancel()  # the holder dies: it renews no more
            try:
                async with asyncio.timeout(30):
                    taken = await waiting
            except TimeoutError:
                state = await lease_state(redis_space)
                pytest.fail(f"no takeover in 30 s: {state} ({first.token=}, {second.token=})")
        assert taken is not None and taken.generation > held.generation
        async with asyncio.timeout(30):
            lost = await first.keep(held)
        assert "passed to" in lost
        async with lease(redis_space, "db2") as other:  # another database: its own lease
            assert await other.acquire(stop) is not None
    async with Redis.from_url(redis_space.url) as redis:  # released on exit: no TTL to wait
        assert await redis.get(f"{redis_space.prefix}record:{{db1}}:lease") is None


def test_the_lease_name_is_the_database_s_whatever_its_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # serve hands on a Path, record the text given
    named = recorder_name(tmp_path / "rec.db")
    assert named == recorder_name("./rec.db") == recorder_name("rec.db")
    with_password = recorder_name("postgresql://u:secret@h/db")
    assert with_password == recorder_name("postgresql://u:other@h/db")
    assert with_password != recorder_name("postgresql://u:secret@h/other")


async def test_a_holder_stopped_as_a_renewal_is_written_stops_renewing(
    redis_space: RedisSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py writes inside asyncio.wait_for, which on Python 3.11 returns the finished
    write instead of raising when the task is cancelled at that very moment: a keeper
    stopped by cancellation alone went on renewing, and the standby never took over (one
    CI run: the holder's token still renewed 30 s after its keeper was cancelled)."""
    stop = asyncio.Event()
    async with lease(redis_space) as first:
        held = await first.acquire(stop)
        assert held is not None
        real_drain = asyncio.StreamWriter.drain
        keeping: asyncio.Task[str] | None = None

        async def drain(writer: asyncio.StreamWriter) -> None:
            await real_drain(writer)
            if keeping is not None and not keeping.cancelling():
                keeping.cancel()  # the holder is stopped just as its renewal is written

        monkeypatch.setattr(asyncio.StreamWriter, "drain", drain)
        keeping = asyncio.create_task(first.keep(held))
        finished, _ = await asyncio.wait({keeping}, timeout=5)
        monkeypatch.undo()
        assert finished, "keep() went on renewing after it was cancelled"
        assert keeping.cancelled()
