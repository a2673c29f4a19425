"""Replaying a recording: the records as they were stored, across markets in exchange time
order (trade, then the book and ticker of that ms), a Gap before the trade after a known gap,
paced on the replay clock at ``speed``, unpaced at 0; bad arguments refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketspine import InvalidRequestError, Spine
from marketspine._live.listener import Gap
from marketspine._spine.replay import replay_events
from marketspine._store.recording import TradeGap
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.recording_store import recording_for
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Orderbook, OrderbookUnit, Ticker, Trade

T0 = 1_790_000_000_000


def trade(market: str, ms: int, n: int = 0) -> Trade:
    return Trade(market, T0 + ms, 100.0, 0.5, "BID", (T0 + ms) * 10_000 + n, 99.0, 1.0)


def book(market: str, ms: int) -> Orderbook:
    return Orderbook(market, T0 + ms, 1.0, 2.0, (OrderbookUnit(101.0, 1.0, 99.0, 2.0),), 0.0)


def ticker(market: str, ms: int) -> Ticker:
    return Ticker(market, T0 + ms, T0 + ms, 1.0, 1.0, 1.0, 1.0, 1.0, "EVEN", 0.0, 0.0, 0.0, 0.0,
                  0.0, 0.0, 0.0, 1.0, "2026-01-01", 1.0, "2026-01-01")  # fmt: skip


async def test_events_come_in_exchange_time_order_with_gaps_and_pacing(tmp_path: Path) -> None:
    btc = [trade("KRW-BTC", ms) for ms in (0, 500, 1500, 90_000_000)] + [trade("KRW-BTC", 500, 1)]
    eth = [trade("KRW-ETH", ms) for ms in (100, 1500, 2000)]
    gap = TradeGap("KRW-BTC", btc[1].seq, btc[2].seq, btc[1].ms, btc[2].ms, "socket lost", 1)
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        recording = SQLiteRecording(store)
        await recording.write(btc + eth, orderbooks=[book("KRW-ETH", 1500)],
                              tickers=[ticker("KRW-BTC", 1500)], gaps=[gap])  # fmt: skip
        now = [50.0]
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        seen: list[tuple[float, Trade | Orderbook | Ticker | Gap]] = []
        kinds, markets = ["trade", "orderbook", "ticker"], ["KRW-BTC", "KRW-ETH"]
        async for event in replay_events(recording, kinds, markets, T0, T0 + 3000, 10.0,
                                         clock=lambda: now[0], sleep=sleep):  # fmt: skip
            seen.append((now[0], event))
    events = [e for _, e in seen]
    assert events == [
        btc[0], eth[0], btc[1], btc[4],
        Gap("KRW-BTC", gap.from_ms, gap.to_ms, 0, False, "socket lost"), btc[2],
        eth[1], book("KRW-ETH", 1500), ticker("KRW-BTC", 1500), eth[2],
    ]  # fmt: skip
    # each handed out (ms - start) / speed after the replay began
    for at, event in seen:
        if isinstance(event, Trade | Orderbook | Ticker):
            assert at - 50.0 == pytest.approx((event.ms - T0) / 1000 / 10.0)
    assert sum(slept) == pytest.approx(0.2)


async def test_spine_replay_checks_its_arguments_and_plays_unpaced(
    fixed_sim: str, tmp_path: Path
) -> None:
    async with Spine(fixed_sim, db=tmp_path / "db.sqlite") as spine:
        recording = recording_for(spine.store)
        await recording.write([trade("KRW-BTC", ms) for ms in range(0, 5000, 7)])
        got = [e async for e in spine.replay(["trade"], ["KRW-BTC"], start=T0, speed=0)]
        assert [e.ms - T0 for e in got if isinstance(e, Trade)] == list(range(0, 5000, 7))
        with pytest.raises(InvalidRequestError, match=r"cannot replay 'candle\.1m'"):
            await anext(spine.replay(["candle.1m"], ["KRW-BTC"], start=T0))
        with pytest.raises(InvalidRequestError, match="speed"):
            await anext(spine.replay(["trade"], ["KRW-BTC"], start=T0, speed=-1))
        with pytest.raises(InvalidRequestError, match="start must be before end"):
            await anext(spine.replay(["trade"], ["KRW-BTC"], start=T0, end=T0))
