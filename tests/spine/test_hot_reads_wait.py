"""A poll of a kept-hot series that lands after a close but before the keeper has put it in
memory waits for it (at most ``HOT_READ_WAIT_S``) instead of asking upstream: it wakes when
the close lands, when the keeper's attempt fails, when the series is released or the keeper
stops; CRITICAL reads never wait. ``meta.provisional`` counts the closes of an answer that
memory holds only (built from trades).

The keeper alone on a hand-driven upstream clock, with a close the test lets land and a bound
on ``FakeTime`` (nothing sleeps half a second for real); then the Spine against the
in-process simulator, whose clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from helpers import FakeTime, ManualClock

from marketspine._base.timeframes import Timeframe, parse_timeframe
from marketspine._budget.rules import Priority
from marketspine._spine import hot
from marketspine._spine.hot import HotWindows
from marketspine._spine.result import CandleResult
from marketspine._spine.spine import Spine
from marketspine.records import Candle

MARKET = "KRW-BTC"
MINUTE = parse_timeframe("1m")
M = 60_000


class Keeper:
    """A ``HotWindows`` whose stream close the test lets land (or not), and whose fetches
    fail: every upstream page it would ask is recorded."""

    def __init__(self, clock: ManualClock, fake: FakeTime) -> None:
        self.asked = asyncio.Event()  # the keeper is building the close
        self.land = asyncio.Event()  # the test lets it land
        self.landed = True  # what the stream answers once let
        self.fetched: list[str] = []
        self.hot = HotWindows(clock, self.read_closed, close_live=self.close_live, sleep=fake.sleep)

    async def close_live(self, market: str, tf: Timeframe, start_ms: int) -> bool:
        self.asked.set()
        await self.land.wait()
        return self.landed

    async def read_closed(
        self, market: str, tf: Timeframe, count: int, priority: Priority
    ) -> CandleResult:
        self.fetched.append(market)
        raise RuntimeError("upstream is not asked in these tests")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MINUTE.floor(ManualClock()()) + 30_000)  # half a minute in


@pytest.fixture
async def keeper(clock: ManualClock, fake: FakeTime) -> AsyncIterator[Keeper]:
    kept = Keeper(clock, fake)
    kept.hot.hold(MARKET, MINUTE, 50, MINUTE.floor(clock()), learned=True)
    task = asyncio.create_task(kept.hot.keep())
    yield kept
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def read(keeper: Keeper, clock: ManualClock) -> asyncio.Task[bool]:
    """A poll's wait, started at upstream's now."""
    return asyncio.create_task(keeper.hot.wait_for_close(MARKET, MINUTE, clock()))


async def asked(keeper: Keeper) -> None:
    async with asyncio.timeout(10):
        await keeper.asked.wait()


async def test_a_read_between_the_minute_and_the_close_waits_for_it(
    keeper: Keeper, clock: ManualClock, fake: FakeTime
) -> None:
    assert not await keeper.hot.wait_for_close(MARKET, MINUTE, clock())  # nothing due: no wait
    clock.advance(30_050)  # 50 ms past the minute: the keeper waits for the close to settle
    waiting = read(keeper, clock)
    await fake.settle()
    assert not waiting.done() and not keeper.asked.is_set()
    clock.advance(200)  # settled: the keeper builds the close
    keeper.hot.changed()
    await asked(keeper)
    await fake.settle()
    assert not waiting.done()
    keeper.land.set()
    assert await waiting
    assert (keeper.hot.reads_waited, keeper.hot.reads_waited_in_vain) == (1, 0)
    assert keeper.hot.closes_live == 1 and keeper.fetched == []
    assert not keeper.hot.close_pending(MARKET, MINUTE, clock())


async def test_the_wait_is_bounded_when_the_keeper_stalls(
    keeper: Keeper, clock: ManualClock, fake: FakeTime
) -> None:
    clock.advance(30_300)
    waiting = read(keeper, clock)
    await asked(keeper)  # and the stream never proves it
    await fake.settle()
    assert not waiting.done()
    assert await fake.step()  # HOT_READ_WAIT_S passes
    assert fake.now == 1000.0 + hot.HOT_READ_WAIT_S
    assert await waiting  # waited, and goes on to read without the close
    assert (keeper.hot.reads_waited, keeper.hot.reads_waited_in_vain) == (1, 1)


async def test_a_release_wakes_the_waiting_read(keeper: Keeper, clock: ManualClock) -> None:
    clock.advance(30_300)
    waiting = read(keeper, clock)
    await asked(keeper)
    assert keeper.hot.release(MARKET, MINUTE.name)
    assert await waiting
    assert keeper.hot.reads_waited_in_vain == 1


async def test_a_failed_attempt_wakes_the_read_and_the_next_do_not_wait(
    keeper: Keeper, clock: ManualClock
) -> None:
    clock.advance(30_300)
    waiting = read(keeper, clock)
    await asked(keeper)
    keeper.landed = False  # the stream cannot prove it, and the page fails
    keeper.land.set()
    assert await waiting
    assert keeper.fetched == [MARKET]
    assert keeper.hot.reads_waited_in_vain == 1
    # Until the keeper's retry holds it, a read asks on at once.
    assert not keeper.hot.close_pending(MARKET, MINUTE, clock())
    assert not await keeper.hot.wait_for_close(MARKET, MINUTE, clock())


async def test_a_stopped_keeper_wakes_the_read(clock: ManualClock, fake: FakeTime) -> None:
    kept = Keeper(clock, fake)
    kept.hot.hold(MARKET, MINUTE, 50, MINUTE.floor(clock()), learned=True)
    task = asyncio.create_task(kept.hot.keep())
    clock.advance(30_300)
    waiting = read(kept, clock)
    await asked(kept)
    task.cancel()
    assert await waiting
    assert kept.hot.reads_waited_in_vain == 1
    assert not kept.hot.close_pending(MARKET, MINUTE, clock())  # no keeper: nobody to wait for
    await asyncio.gather(task, return_exceptions=True)


# -- through the Spine --------------------------------------------------------------------


async def served(sim_client: httpx.AsyncClient) -> int:
    stats = (await sim_client.get("/sim/stats")).json()
    return int(sum(stats["requests"]["by_group"].values()))


async def learned(spine: Spine) -> None:
    for _ in range(3):  # a bot's poll loop
        await spine.candles(MARKET, "1m", count=50, closed_only=True)
    assert [s.learned for s in spine.polled()] == [True]


async def test_a_poll_right_after_the_minute_gets_the_close_from_memory(
    sim_spine: Spine,
    sim_client: httpx.AsyncClient,
    sim_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The keeper's page may be slow on a loaded machine: the read waits as long as the test.
    monkeypatch.setattr(hot, "HOT_READ_WAIT_S", 30.0)
    spine = sim_spine
    await learned(spine)
    calls = await served(sim_client)
    sim_clock.advance(M)
    newest = MINUTE.floor(sim_clock()) - M
    # Lands before the keeper (asleep until its next planned look) has fetched the close.
    answer = await spine.candles(MARKET, "1m", count=50, closed_only=True)
    assert answer.meta.source == "memory" and answer.meta.upstream_calls == 0
    assert answer[-1].start_ms == newest and len(answer) == 50
    assert await served(sim_client) == calls + 1  # the keeper's one page, nothing more
    stats = spine.statistics()
    assert (stats.hot_reads_waited, stats.hot_reads_waited_in_vain) == (1, 0)
    assert stats.hot_closes_fetched == 1


async def test_critical_reads_never_wait(sim_spine: Spine, sim_clock: ManualClock) -> None:
    spine = sim_spine
    await learned(spine)
    sim_clock.advance(M)
    assert spine._hot.close_pending(MARKET, MINUTE, sim_clock())  # a NORMAL read would wait
    answer = await spine.candles(
        MARKET, "1m", count=50, closed_only=True, priority=Priority.CRITICAL
    )
    assert answer[-1].start_ms == MINUTE.floor(sim_clock()) - M
    assert spine.statistics().hot_reads_waited == 0


async def test_provisional_counts_the_closes_memory_holds_only(
    sim_spine: Spine, sim_clock: ManualClock
) -> None:
    spine = sim_spine
    first = await spine.candles(MARKET, "1m", count=50, closed_only=True)
    assert first.meta.provisional == 0
    sim_clock.advance(M)
    newest = MINUTE.floor(sim_clock()) - M
    last = first[-1]
    built = Candle(
        MARKET, "1m", newest, last.close, last.close, last.close, last.close, 1.0, last.close,
        newest + 1,
    )  # fmt: skip
    # What the keeper does with a close the trade stream proved.
    spine._memory.put((MARKET, MINUTE.key), newest, newest + M, [built], provisional=True)
    answer = await spine.candles(MARKET, "1m", count=50, closed_only=True)
    assert answer.meta.source == "memory" and answer.meta.upstream_calls == 0
    assert answer[-1] == built and answer.meta.provisional == 1
    older = await spine.candles(MARKET, "1m", count=10, end=newest, closed_only=True)
    assert older.meta.provisional == 0 and older[-1].start_ms == newest - M
