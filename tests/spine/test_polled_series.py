"""Prefetch learned from use: a series clients poll by count is learned after a few polls
and kept hot like a preloaded one (each close fetched by the keeper, so the next poll is a
memory hit), bounded, and forgotten once polling stops. The learner itself on a hand-driven
clock; the Spine against a simulator whose clock the test moves."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from helpers import ManualClock, wait_until

from marketspine._base.timeframes import parse_timeframe
from marketspine._spine.spine import Spine
from marketspine._spine.usage import PollLearner
from marketspine.sim import SimConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_series_polled_on_a_rhythm_is_learned_then_forgotten_when_polling_stops() -> None:
    clock = Clock()
    learner = PollLearner(clock, learn_after=3, max_interval_s=120, min_idle_s=30)
    learned = []
    for _ in range(3):
        learned.append(learner.note("KRW-BTC", "1m", 200, from_memory=False))
        clock.now += 10
    assert learned == [False, False, True]
    assert learner.note("KRW-BTC", "1m", 100, from_memory=True) is False  # learned already
    (series,) = learner.series()
    assert series.learned and series.count == 200 and series.hits == 1 and series.misses == 0
    assert series.interval_s is not None and abs(series.interval_s - 10) < 1e-9
    clock.now += 29
    assert learner.release() == []  # still within max(30 s, 3 x 10 s)
    clock.now += 2
    assert [s.market for s in learner.release()] == ["KRW-BTC"]
    assert learner.series() == [] and learner.statistics().forgotten == 1


def test_slow_or_one_off_reads_are_not_learned_and_the_set_is_bounded() -> None:
    clock = Clock()
    learner = PollLearner(clock, limit=2, learn_after=3, max_interval_s=60)
    for _ in range(4):
        assert not learner.note("KRW-ETH", "1d", 30, from_memory=False)
        clock.now += 600  # every ten minutes: too slow to keep hot
    for market in ("KRW-A", "KRW-B"):
        for _ in range(3):
            learner.note(market, "1m", 10, from_memory=False)
            clock.now += 1
    assert [s.market for s in learner.series()] == ["KRW-A", "KRW-B"]
    learner.note("KRW-C", "1m", 10, from_memory=False)  # drops KRW-A, learned: released
    assert [s.market for s in learner.release()] == ["KRW-A"]
    assert [s.market for s in learner.series()] == ["KRW-B", "KRW-C"]
    stats = learner.statistics()
    assert (stats.tracked, stats.learned) == (2, 1)


async def test_a_polled_series_is_kept_hot_without_a_preload(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    tmp_path: Path,
) -> None:
    minute = parse_timeframe("1m")
    with running_sim(SimConfig(seed=5, rate_limit=0), sim_clock) as url:
        async with Spine(url, tmp_path / "polled.db", wall_ms=sim_clock) as spine:
            for _ in range(3):  # a bot's poll loop
                await spine.candles("KRW-BTC", "1m", count=50, closed_only=True)
            (series,) = spine.polled()
            assert series.learned and (series.market, series.timeframe) == ("KRW-BTC", "1m")
            # Two minutes close upstream: the keeper, not a poll, fetches them.
            sim_clock.advance(2 * 60_000)
            newest = minute.floor(sim_clock()) - 60_000
            key = ("KRW-BTC", minute.key)

            def fetched() -> bool:
                covered = spine._memory.covered(key)
                return covered is not None and covered[1] > newest

            await wait_until(fetched, 20, "the keeper to fetch the closed minutes")
            after = await spine.candles("KRW-BTC", "1m", count=50, closed_only=True)
            assert after.meta.source == "memory" and after.meta.upstream_calls == 0
            assert after[-1].start_ms == newest
            stats = spine.statistics()
            assert (stats.polled_series, stats.learned_series) == (1, 1)
            assert stats.learned_hits == 1 and stats.learned_misses == 0


async def test_a_market_polled_in_two_timeframes_costs_one_page_per_close(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    tmp_path: Path,
) -> None:
    five = parse_timeframe("5m")
    with running_sim(SimConfig(seed=5, rate_limit=0), sim_clock) as url:

        def five_minute_pages() -> int:
            stats = httpx.get(url + "/sim/stats", timeout=5).json()
            return int(stats["requests"]["by_path"].get("/v1/candles/minutes/5", 0))

        async with Spine(url, tmp_path / "two.db", wall_ms=sim_clock) as spine:
            for _ in range(3):
                await spine.candles("KRW-BTC", "1m", count=30, closed_only=True)
                await spine.candles("KRW-BTC", "5m", count=10, closed_only=True)
            assert [s.learned for s in spine.polled()] == [True, True]
            before = five_minute_pages()
            sim_clock.advance(5 * 60_000)
            newest = five.floor(sim_clock()) - 5 * 60_000
            key = ("KRW-BTC", five.key)

            def fetched() -> bool:
                covered = spine._memory.covered(key)
                return covered is not None and covered[1] > newest

            await wait_until(fetched, 20, "the keeper to hold the closed 5m candle")
            # Built from the minutes the keeper fetched first: no 5m page asked upstream.
            assert five_minute_pages() == before
            after = await spine.candles("KRW-BTC", "5m", count=10, closed_only=True)
            assert after.meta.source == "memory" and after[-1].start_ms == newest
