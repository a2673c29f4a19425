"""Range locks: overlapping ranges of one key take turns in arrival order, disjoint ranges and
other keys never wait, and nothing is left behind once a key is no longer in use."""

from __future__ import annotations

import asyncio

import pytest
from helpers import wait_until

from marketspine._base.range_lock import RangeLock


async def test_overlapping_ranges_take_turns_disjoint_ones_do_not_wait() -> None:
    locks = RangeLock()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, lo: int, hi: int, name: str) -> None:
        async with locks.hold(key, lo, hi):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(hold("s", 100, 200, "first"))
    await wait_until(lambda: order == ["first"], 5, "the first holder")
    tasks = [
        asyncio.create_task(hold("s", 150, 250, "overlapping")),
        asyncio.create_task(hold("s", 0, 100, "below")),  # touches, does not overlap
        asyncio.create_task(hold("s", 240, 300, "behind the overlapping one")),
        asyncio.create_task(hold("t", 100, 200, "another key")),
    ]
    await wait_until(lambda: len(order) == 3, 5, "the holders that need not wait")
    assert order == ["first", "below", "another key"]
    assert len(locks) == 2
    release.set()
    await asyncio.gather(first, *tasks)
    assert order[3:] == ["overlapping", "behind the overlapping one"]
    assert len(locks) == 0


async def test_a_waiter_cancelled_while_waiting_leaves_nothing_behind() -> None:
    locks = RangeLock()
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(lo: int) -> None:
        async with locks.hold("s", lo, lo + 10):
            entered.append(lo)
            await release.wait()

    holder = asyncio.create_task(hold(0))
    await wait_until(lambda: entered == [0], 5, "the holder")
    waiter = asyncio.create_task(hold(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert entered == [0] and len(locks) == 0


async def test_a_key_is_dropped_once_released_even_after_an_error() -> None:
    locks = RangeLock()
    with pytest.raises(RuntimeError):
        async with locks.hold("s", 0, 10):
            raise RuntimeError("boom")
    assert len(locks) == 0
