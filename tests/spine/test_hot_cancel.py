"""The hot-window keeper ends when cancelled, even when the cancel lands in the same loop
step as the wake-up it waits for (``Spine.aclose`` cancels it while a preload wakes it)."""

from __future__ import annotations

import asyncio

from marketspine._base.timeframes import TIMEFRAMES, Timeframe
from marketspine._spine.hot import HotWindows
from marketspine._spine.result import CandleResult


async def test_a_cancel_that_lands_with_a_wake_up_ends_the_keeper() -> None:
    async def read_closed(market: str, tf: Timeframe, count: int, priority: object) -> CandleResult:
        raise AssertionError("nothing is due")

    minute = TIMEFRAMES["1m"]
    hot = HotWindows(lambda: 10 * 60_000, read_closed)
    hot.hold("KRW-BTC", minute, 10, minute.floor(10 * 60_000))  # forming: not due
    keeper = asyncio.create_task(hot.keep())
    for _ in range(5):  # let it reach its wait
        await asyncio.sleep(0)
    # With asyncio.wait_for (3.11) the finished wait wins: the cancel was lost, the keeper
    # looped on and this await never ended.
    hot.changed()
    keeper.cancel()
    done, _ = await asyncio.wait({keeper}, timeout=5)
    assert keeper in done, "the keeper went on after it was cancelled"
    assert keeper.cancelled()
