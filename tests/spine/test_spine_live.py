"""Spine's live side against a loopback simulator running faster than real time: tickers
and trades from the WebSocket-fed state, forming candles built from the trade stream that
equal the simulator's REST candle once closed, and preloaded windows kept hot."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from helpers import ManualClock, afternoon_clock, answer_meta, wait_until

from marketspine._base.time import HOUR_MS, MINUTE_MS
from marketspine._base.timeframes import parse_timeframe
from marketspine._spine.quotes import Channel
from marketspine._spine.spine import Spine
from marketspine.records import Candle, Trade
from marketspine.sim import SimConfig

FORMING_TIMEFRAMES = ("1m", "3m", "5m", "10m", "15m", "30m", "1h", "4h", "1d")


@pytest.fixture
def fast_sim(running_sim: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    # One real second is a simulated minute: trades and books stream at once. (Faster, the
    # simulator spends seconds generating each tick's trades, and its shutdown waits.)
    with running_sim(SimConfig(seed=5, speed=60, rate_limit=0), afternoon_clock(60)) as url:
        yield url


@pytest.fixture
async def spine(fast_sim: str, tmp_path: Path) -> AsyncIterator[Spine]:
    async with Spine(fast_sim, tmp_path / "live.db") as s:
        yield s


async def test_ticker_and_trades_from_live_state(spine: Spine) -> None:
    await spine.watch(["ticker", "trade"], ["KRW-BTC"])
    await wait_until(lambda: spine._live.trade_count("KRW-BTC") >= 50, 20, "50 live trades")
    ticker = await spine.ticker("KRW-BTC", channel=Channel.WEBSOCKET_ONLY)
    assert ticker.market == "KRW-BTC" and answer_meta(ticker).sources == ("live",)
    assert answer_meta(ticker).upstream_calls == 0
    before = spine.client.statistics().sent["ticker"]
    for _ in range(1000):
        await spine.ticker("KRW-BTC", max_age_s=60)
    # All answered by the stream-fed state (its speed is in bench/spine.py), none by REST.
    assert spine.statistics().answered_by.get("live", 0) >= 1000
    assert spine.client.statistics().sent["ticker"] == before
    trades = await spine.trades("KRW-BTC", count=50)
    assert len(trades) == 50
    assert [t.ms for t in trades] == sorted((t.ms for t in trades), reverse=True)
    assert len({t.seq for t in trades}) == 50
    # The trade ids the stream keeps for de-duplication are charged to the same budget.
    held = spine.statistics().memory_bytes
    ids = held - spine._live.statistics().bytes - spine._memory.statistics().bytes
    assert ids >= 50 * sys.getsizeof(10**16)


async def test_stream_yields_typed_events(spine: Spine) -> None:
    seen: list[Trade] = []
    async for event in spine.stream(["trade"], ["KRW-ETH"]):
        if isinstance(event, Trade):
            seen.append(event)
        if len(seen) >= 20:
            break
    assert all(t.market == "KRW-ETH" for t in seen)
    assert len({t.seq for t in seen}) == 20


async def test_forming_candles_equal_rest_once_closed(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    tmp_path: Path,
) -> None:
    # Simulated time moves by hand, in steps of six hours: the stream delivers each step's
    # trades as one burst, and two day candles close in a few real seconds at most. Starting
    # late in the day, the first day candle closes in the first step, the second four later.
    sim_clock.ms = parse_timeframe("1d").floor(sim_clock.ms) + 20 * HOUR_MS + 41 * MINUTE_MS
    with running_sim(SimConfig(seed=5, rate_limit=0), sim_clock) as url:
        async with Spine(url, tmp_path / "forming.db", wall_ms=sim_clock) as spine:
            await check_forming_candles_equal_rest_once_closed(spine, sim_clock)


async def check_forming_candles_equal_rest_once_closed(spine: Spine, clock: ManualClock) -> None:
    market = "KRW-BTT"  # ~1,200 trades a day: a step of hours is a burst, not a flood
    await spine.watch([f"candle.{name}" for name in FORMING_TIMEFRAMES], [market])
    closed: dict[str, Candle] = {}

    def all_closed_twice() -> bool:
        # Wait for a window built entirely from streamed trades (the second close). Every
        # timeframe notes its first close when it happens, whatever the others do.
        twice = True
        for name in FORMING_TIMEFRAMES:
            candle = spine._live.last_closed(market, name)
            if candle is None:
                twice = False
                continue
            first = closed.setdefault(name + "/first", candle)
            if candle.start_ms == first.start_ms:
                twice = False
                continue
            closed[name] = candle
        return twice

    def delivered(seq: int) -> Callable[[], bool]:
        return lambda: any(t.seq == seq for t in spine._live.trades(market, 50))

    steps = 0
    while not all_closed_twice():
        steps += 1
        assert steps <= 6, "two day candles should have closed within 6 steps of 6 h"
        clock.advance(6 * 3_600_000)
        # The newest trade upstream now holds; the stream has delivered the step once the
        # live state holds it too (trades arrive in order).
        (newest,) = await spine.client.trades(market, count=1)
        await wait_until(delivered(newest.seq), 20, "the stream to deliver the step's trades")
    for name in FORMING_TIMEFRAMES:
        mine = closed[name]
        tf = parse_timeframe(name)
        (theirs,) = await spine.client.candles(
            market, tf, count=1, to_ms=tf.next_start(mine.start_ms)
        )
        assert theirs.start_ms == mine.start_ms, name
        assert (mine.open, mine.high, mine.low, mine.close) == (
            theirs.open,
            theirs.high,
            theirs.low,
            theirs.close,
        ), name
        assert mine.last_trade_ms == theirs.last_trade_ms, name
        assert mine.volume == pytest.approx(theirs.volume, rel=1e-9), name
        assert mine.value == pytest.approx(theirs.value, rel=1e-9), name


async def test_preloaded_windows_stay_hot(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    tmp_path: Path,
) -> None:
    # One settable clock for the simulator and Spine (as a real local clock runs with
    # Upbit's): minutes close only when the test moves it, so no close can race the checks.
    with running_sim(SimConfig(seed=5, rate_limit=0), sim_clock) as url:
        async with Spine(url, tmp_path / "hot.db", wall_ms=sim_clock) as spine:
            await check_preloaded_windows_stay_hot(spine, sim_clock)


async def check_preloaded_windows_stay_hot(spine: Spine, clock: ManualClock) -> None:
    held = await spine.preload({"KRW-BTC": {"1m": 60, "1h": 24}, "KRW-ETH": {"5m": 30}})
    assert held == {"KRW-BTC": {"1m": 60, "1h": 24}, "KRW-ETH": {"5m": 30}}
    first = await spine.candles("KRW-BTC", "1m", count=60, closed_only=True)
    assert first.meta.source == "memory" and first.meta.upstream_calls == 0
    minute = parse_timeframe("1m")
    assert first[-1].start_ms == minute.floor(clock()) - 60_000
    # Three minutes close upstream; the keeper (not a reader) fetches them into memory.
    clock.advance(3 * 60_000)
    newest = minute.floor(clock()) - 60_000
    key = ("KRW-BTC", minute.key)

    def refreshed() -> bool:
        covered = spine._memory.covered(key)
        return covered is not None and covered[1] > newest

    await wait_until(refreshed, 20, "the keeper to fetch the closed minutes")
    later = await spine.candles("KRW-BTC", "1m", count=60, closed_only=True)
    assert later.meta.source == "memory" and later.meta.upstream_calls == 0
    assert len(later) == 60 and later[-1].start_ms == newest


async def test_auto_falls_back_to_the_stream_when_rest_fails(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    import httpx

    from marketspine import UpstreamError
    from marketspine._client.retry import RetryPolicy

    with running_sim(SimConfig(seed=5, speed=10, rate_limit=0), afternoon_clock(10)) as url:
        retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
        async with Spine(url, tmp_path / "auto.db", retry=retry) as spine:
            await spine.watch(["ticker"], ["KRW-BTC"])
            live = await spine.ticker("KRW-BTC", channel=Channel.WEBSOCKET_ONLY)
            async with httpx.AsyncClient() as http:
                await http.post(url + "/sim/faults", json={"error_rate": 1.0})
            # REST is down: AUTO answers from the stream, REST_ONLY says what failed.
            answer = await spine.ticker("KRW-BTC", max_age_s=0)
            assert answer.market == "KRW-BTC" and answer.ms >= live.ms
            assert answer_meta(answer).stale and answer_meta(answer).sources == ("stale",)
            with pytest.raises(UpstreamError):
                await spine.ticker("KRW-BTC", channel=Channel.REST_ONLY, max_age_s=0)


async def test_bot_path_never_waits_behind_a_low_backfill(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    from marketspine import Priority

    with running_sim(SimConfig(seed=5, latency_ms=30)) as url:
        async with Spine(url, tmp_path / "prio.db") as spine:
            now = spine.client.upstream_now_ms()
            backfill = asyncio.create_task(
                spine.candles(
                    "KRW-ETH",
                    "1m",
                    start=now - 3 * 86_400_000,
                    end=now - now % 60_000,
                    priority=Priority.LOW,
                )
            )
            await wait_until(
                lambda: spine.client.statistics().sent["candles"] >= 5,
                10,
                "the backfill to saturate the candle group",
            )
            waits = []
            for market in ("KRW-BTC", "KRW-XRP", "KRW-SOL"):
                started = time.perf_counter()
                await spine.candles(market, "1m", count=1, priority=Priority.CRITICAL)
                waits.append(time.perf_counter() - started)
            assert not backfill.done()  # it really was saturating the group meanwhile
            # one token interval (~0.1 s) plus the 30 ms latency, with room for a busy machine
            assert max(waits) < 0.5, waits
            backfill.cancel()


async def test_watched_books_at_a_chosen_depth(spine: Spine) -> None:
    from marketspine import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="depth"):
        await spine.watch(["ticker"], ["KRW-BTC"], depth=5)
    await spine.watch(["orderbook"], ["KRW-BTC"], depth=5)
    await wait_until(lambda: spine._live.orderbook("KRW-BTC") is not None, 20, "a live book")
    book = await spine.orderbook("KRW-BTC", channel=Channel.WEBSOCKET_ONLY)
    assert book.market == "KRW-BTC" and len(book.units) == 5
    assert answer_meta(book).sources == ("live",) and answer_meta(book).upstream_calls == 0
