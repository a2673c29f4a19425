"""A learned series whose market is watched has each close put into memory from the trade
stream, with no upstream call, equal to the simulator's REST candle field by field; a
reconnect inside the window makes the keeper fetch it instead, and an unwatched market still
costs its one REST page per close. The simulator's clock moves by hand; every wait is on a
condition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from helpers import ManualClock, wait_until

from marketspine._base.time import format_utc
from marketspine._base.timeframes import parse_timeframe
from marketspine._live.stream import Stream
from marketspine._spine import hot
from marketspine._spine.spine import Spine
from marketspine._upbit.rest_rows import candle_row
from marketspine.records import Candle
from marketspine.sim import History, SimConfig

WATCHED, UNWATCHED = "KRW-BTC", "KRW-ETH"
MINUTE = parse_timeframe("1m")
# Summed by upstream, not from trades: the simulator apportions each minute's volume and
# value over its trades, so the trades' float sums agree to rounding only (upstream's
# ``timestamp`` is when its last tick was stored, which trades cannot tell either). Why
# such a candle stays in memory and is never stored: ``Spine._close_live``.
SUMS = {"candle_acc_trade_price", "candle_acc_trade_volume"}
CONFIG = SimConfig(seed=5, rate_limit=0)
HISTORY = History(CONFIG.seed, markets=CONFIG.markets, region=CONFIG.region)  # its trades


@pytest.fixture
def url(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    # The stream's burst of a step's trades may come late on a loaded machine: the keeper
    # waits for it as long as the test would (a proof that cannot come is not waited for).
    monkeypatch.setattr(hot, "LIVE_CLOSE_WAIT_S", 30.0)
    with running_sim(CONFIG, sim_clock) as base:
        yield base


def served(url: str) -> int:
    stats = httpx.get(url + "/sim/stats", timeout=5).json()
    return int(sum(stats["requests"]["by_group"].values()))


def served_by_path(url: str) -> Counter[str]:
    stats = httpx.get(url + "/sim/stats", timeout=5).json()
    return Counter(stats["requests"]["by_path"])


async def learned(spine: Spine, markets: list[str]) -> None:
    for _ in range(3):  # a bot's poll loop
        for market in markets:
            await spine.candles(market, "1m", count=50, closed_only=True)
    assert all(series.learned for series in spine.polled())


async def close_minute(spine: Spine, clock: ManualClock, markets: list[str]) -> int:
    """Move upstream's clock a minute on; returns the start of the minute that closed, once
    the keeper holds it for every one of ``markets``.

    In two steps: to just short of when the keeper takes the close (``HOT_SETTLE_MS`` after
    it), then, once the stream has delivered the closed minute's last trade, the rest. The
    simulator's clock jumps, and its stream sends what the jump passed at its next tick,
    while pings are answered at once: a keeper proving a quiet close by a ping in between
    would take a candle short of its last trades. (Upbit's clock runs: by the time the
    keeper asks, the window's trades were sent.)"""
    target = clock() + 60_000
    newest = MINUTE.floor(target) - 60_000
    clock.advance(min(target, newest + 60_000 + hot.HOT_SETTLE_MS // 2) - clock())
    if WATCHED in markets:
        last = [t.ms for t in HISTORY.trades_between(WATCHED, newest, newest + 60_000)]

        def delivered() -> bool:
            seen = spine._live.trades(WATCHED, 1)
            return not last or (bool(seen) and seen[0].ms >= last[-1])

        await wait_until(delivered, 20, "the stream to send the closed minute's trades")
    clock.advance(target - clock())

    def held() -> bool:
        for market in markets:
            covered = spine._memory.covered((market, MINUTE.key))
            if covered is None or covered[1] <= newest:
                return False
        return True

    await wait_until(held, 20, "the keeper to hold the closed minute")
    return newest


async def watched(spine: Spine) -> None:
    await spine.watch(["trade"], [WATCHED])
    await wait_until(lambda: spine._live.trade_count(WATCHED) >= 1, 20, "the snapshot trade")


async def test_a_watched_markets_close_comes_from_the_stream_and_equals_rest(
    url: str, sim_clock: ManualClock, tmp_path: Path
) -> None:
    async with Spine(url, tmp_path / "live.db", wall_ms=sim_clock) as spine:
        await watched(spine)
        await learned(spine, [WATCHED, UNWATCHED])
        # The minute forming when the series was learned began before the stream was
        # followed for it: however it comes, the next one is seen whole.
        await close_minute(spine, sim_clock, [WATCHED, UNWATCHED])
        calls, before = served(url), spine.statistics()
        newest = await close_minute(spine, sim_clock, [WATCHED, UNWATCHED])
        # One page for the unwatched market; none for the watched one.
        assert served(url) == calls + 1
        stats = spine.statistics()
        assert stats.hot_closes_live == before.hot_closes_live + 1
        assert stats.hot_closes_fetched == before.hot_closes_fetched + 1

        calls = served(url)
        answer = await spine.candles(WATCHED, "1m", count=50, closed_only=True)
        assert answer.meta.source == "memory" and answer.meta.upstream_calls == 0
        assert answer.meta.provisional == 1  # the close built from trades, memory only
        assert served(url) == calls
        mine = answer[-1]
        assert mine.start_ms == newest

        # Field by field against what the simulator's REST answers for that window.
        to = format_utc(MINUTE.next_start(newest)) + "Z"
        params: dict[str, str | int] = {"market": WATCHED, "to": to, "count": 1}
        async with httpx.AsyncClient(base_url=url) as http:
            (theirs,) = (await http.get("/v1/candles/minutes/1", params=params)).json()
        ours = row(mine)
        assert ours.keys() == theirs.keys()
        for field, value in theirs.items():
            if field in SUMS:
                assert ours[field] == pytest.approx(value, rel=1e-9), field
            else:
                assert ours[field] == value, field

        # Memory only: the store holds upstream's candle once a range read asks for it.
        assert await spine.store.read(WATCHED, MINUTE, newest, newest + 60_000) == []
        ranged = await spine.candles(WATCHED, "1m", start=newest, end=newest + 60_000)
        assert "upstream" in ranged.meta.sources
        (stored,) = await spine.store.read(WATCHED, MINUTE, newest, newest + 60_000)
        assert list(ranged) == [stored]
        assert row(stored) == theirs


async def test_a_reconnect_in_the_window_falls_back_to_one_rest_page(
    url: str, sim_clock: ManualClock, tmp_path: Path
) -> None:
    async with Spine(url, tmp_path / "drop.db", wall_ms=sim_clock) as spine:
        await watched(spine)
        await learned(spine, [WATCHED])
        await close_minute(spine, sim_clock, [WATCHED])
        await spine.candles(WATCHED, "1m", count=50, closed_only=True)  # still polled
        # The socket is cut while the next minute forms: trades may have been missed.
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/sim/faults", json={"ws_drop_every_s": 0.2})
            await wait_until(reconnected(spine), 20, "the stream to lose its socket")
            await http.post("/sim/faults", json={"ws_drop_every_s": 0})
            drops = (await http.get("/sim/stats")).json()["websocket"]["drops"]

        def back_for_good() -> bool:
            """Reconnected after the last drop: a drop just before the faults went off
            may not have reached the client yet, which would then be live on a socket
            about to end, and reconnect in the minute (a hole's fill, a REST close)."""
            stats = spine.live_statistics()
            caught_up = stats is not None and stats.reconnects >= drops
            return caught_up and spine._live.epoch() is not None

        await wait_until(back_for_good, 20, "the stream to reconnect after the last drop")
        # The hole the drops left is filled from REST (/v1/trades/ticks): not this close's.
        stream = spine._feed._stream
        assert isinstance(stream, Stream)  # this process's own socket (no Redis)
        await wait_until(lambda: not stream.filling(WATCHED), 20, "the hole's trades")
        calls, before = served_by_path(url), spine.statistics()
        newest = await close_minute(spine, sim_clock, [WATCHED])
        assert served_by_path(url) - calls == Counter({"/v1/candles/minutes/1": 1})
        stats = spine.statistics()
        assert stats.hot_closes_live == before.hot_closes_live
        assert stats.hot_closes_fetched == before.hot_closes_fetched + 1
        answer = await spine.candles(WATCHED, "1m", count=50, closed_only=True)
        assert answer.meta.source == "memory" and answer[-1].start_ms == newest
        assert answer.meta.provisional == 0  # the page replaced any close built from trades
        (stored,) = await spine.store.read(WATCHED, MINUTE, newest, newest + 60_000)
        assert answer[-1] == stored  # upstream's own, stored


def reconnected(spine: Spine) -> Callable[[], bool]:
    def check() -> bool:
        stats = spine.live_statistics()
        return stats is not None and stats.reconnects >= 1

    return check


def row(candle: Candle) -> dict[str, object]:
    """``candle`` as ``/v1/candles/minutes/1`` writes it (``serve`` renders it so too)."""
    return candle_row(
        candle.market, MINUTE, candle.start_ms, candle.open, candle.high, candle.low,
        candle.close, candle.last_trade_ms, candle.value, candle.volume,
    )  # fmt: skip
