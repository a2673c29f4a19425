"""Per-series locks: one holder per key at a time, and no lock left behind once a key is no
longer in use (the table never grows with the markets × timeframes ever asked for)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_until

from marketspine._base.keyed_lock import KeyedLock
from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig, create_app


async def test_one_holder_per_key_in_arrival_order_other_keys_free() -> None:
    locks = KeyedLock()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(hold("a", "a1"))
    await wait_until(lambda: order == ["a1"], 5, "the first holder")
    waiters = [asyncio.create_task(hold("a", f"a{i}")) for i in (2, 3)]
    other = asyncio.create_task(hold("b", "b1"))
    await wait_until(lambda: "b1" in order, 5, "another key's holder")
    assert order == ["a1", "b1"]  # a2 and a3 wait for a1; b is not held up by a
    assert len(locks) == 2
    release.set()
    await asyncio.gather(first, *waiters, other)
    assert order == ["a1", "b1", "a2", "a3"]
    assert len(locks) == 0


async def test_a_key_is_dropped_once_released_even_after_an_error() -> None:
    locks = KeyedLock()
    for i in range(1000):
        async with locks.hold(("KRW-" + str(i), "1m")):
            assert len(locks) == 1
    with pytest.raises(RuntimeError):
        async with locks.hold("x"):
            raise RuntimeError("boom")
    assert len(locks) == 0


async def test_a_waiter_cancelled_while_waiting_leaves_nothing_behind() -> None:
    locks = KeyedLock()
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("k"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("k"):
            pytest.fail("the cancelled waiter must never get the lock")

    first = asyncio.create_task(holder())
    await held.wait()
    second = asyncio.create_task(waiter())
    await wait_until(lambda: locks._locks["k"][1] == 2, 5, "the waiter queued")
    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second
    assert len(locks) == 1  # the holder's
    release.set()
    await first
    assert len(locks) == 0


async def test_spine_keeps_no_series_lock_after_its_requests(tmp_path: Path) -> None:
    app: Any = create_app(SimConfig(seed=3, rate_limit=0))
    async with Spine(
        "http://sim", tmp_path / "spine.db", transport=httpx.ASGITransport(app=app)
    ) as spine:
        markets = [m.market for m in await spine.markets()][:6]
        calls = [
            spine.candles(market, tf, count=20, closed_only=True)
            for market in markets
            for tf in ("1m", "5m", "1h")
            for _ in range(3)  # concurrent requests of one series share its lock
        ]
        results = await asyncio.gather(*calls)
        assert all(len(r) == 20 for r in results)
        await spine.candles(markets[0], "1d", start="2024-06-01", end="2024-06-10")
        assert spine._reader is not None
        assert len(spine._reader.series_locks) == 0
