"""Spine.replay over a recording written into the store (and ``replay_events`` over small
scripted ones): every recorded trade, book and
ticker once, in exchange time order across markets, the known gap as a Gap before the trade
after it, candles built from the trades, read in small batches; paced by a hand-driven clock;
bad input refused."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from replay_support import BTC, ETH, T0, Recorded, recorded, write_recording
from services import PgSpace

from marketspine._live.candle_feed import ClosedCandle
from marketspine._live.listener import Gap
from marketspine._spine.replay import Replay, ReplayEvent, check_replay, replay_events
from marketspine._spine.spine import Spine
from marketspine._store.recording import TradeGap
from marketspine._store.recording_reads import recorded_markets
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.recording_store import recording_for
from marketspine._store.sqlite import SQLiteStore
from marketspine.errors import InvalidRequestError
from marketspine.records import Candle, Orderbook, OrderbookUnit, Ticker, Trade

END = T0 + 10 * 60_000


@pytest.fixture
async def data(tmp_path: Path) -> Recorded:
    found = recorded()
    await write_recording(tmp_path / "rec.db", found)
    return found


@pytest.fixture
async def spine(tmp_path: Path, data: Recorded) -> AsyncIterator[Spine]:
    async with Spine(db=tmp_path / "rec.db") as opened:
        yield opened


def time_of(event: object) -> int:
    if isinstance(event, Gap):
        return event.until_ms
    if isinstance(event, ClosedCandle):
        return event.candle.start_ms
    assert isinstance(event, Trade | Ticker | Orderbook | Candle)
    return event.ms if not isinstance(event, Candle) else event.last_trade_ms


async def test_replay_yields_every_record_once_in_time_order(spine: Spine, data: Recorded) -> None:
    events = [e async for e in spine.replay(["trade", "ticker", "orderbook"], [BTC, ETH],
                                            start=T0, end=END, speed=0)]  # fmt: skip
    trades = [e for e in events if isinstance(e, Trade)]
    assert sorted(trades, key=lambda t: (t.ms, t.seq)) == trades
    assert sorted(trades, key=lambda t: t.seq) == sorted(data.trades, key=lambda t: t.seq)
    assert [e for e in events if isinstance(e, Orderbook)] == sorted(data.books, key=lambda b: b.ms)
    assert [e for e in events if isinstance(e, Ticker)] == sorted(data.tickers, key=lambda t: t.ms)
    times = [time_of(e) for e in events]
    assert times == sorted(times)
    gaps = [i for i, e in enumerate(events) if isinstance(e, Gap)]
    assert len(gaps) == 1
    gap = events[gaps[0]]
    assert gap == Gap(ETH, data.gap.from_ms, data.gap.to_ms, 0, complete=False,
                      reason="REST walk failed")  # fmt: skip
    after = next(e for e in events[gaps[0] :] if isinstance(e, Trade) and e.market == ETH)
    assert after.seq == data.gap.to_seq
    assert len(events) == len(data.trades) + len(data.books) + len(data.tickers) + 1


async def test_replay_of_a_part_of_the_range_and_one_kind(spine: Spine, data: Recorded) -> None:
    lo, hi = T0 + 30_000, T0 + 60_000
    events = [e async for e in spine.replay("trade", BTC, start=lo, end=hi, speed=0)]
    assert events == [t for t in data.trades if t.market == BTC and lo <= t.ms < hi]


async def test_small_batches_change_nothing(tmp_path: Path, data: Recorded) -> None:
    async with SQLiteStore(tmp_path / "rec.db") as store:
        recording = SQLiteRecording(store)
        plan = await check_replay(recording, ["trade", "orderbook"], [BTC, ETH], T0, END, 0)
        whole = [e async for e in Replay(recording, plan).events()]
        small = [e async for e in Replay(recording, plan, batch_size=3).events()]
    assert small == whole
    assert sum(isinstance(e, Trade) for e in small) == len(data.trades)


async def test_candle_kinds_build_forming_and_closed_candles(spine: Spine, data: Recorded) -> None:
    events = [e async for e in spine.replay(["candle.1m"], [BTC], start=T0, end=END, speed=0)]
    closed = [e.candle for e in events if isinstance(e, ClosedCandle)]
    btc = [t for t in data.trades if t.market == BTC]
    windows = sorted({t.ms // 60_000 * 60_000 for t in btc})
    assert [c.start_ms for c in closed] == windows
    for candle in closed:
        inside = [t for t in btc if candle.start_ms <= t.ms < candle.start_ms + 60_000]
        assert candle.open == inside[0].price and candle.close == inside[-1].price
        assert candle.high == max(t.price for t in inside)
        assert candle.volume == pytest.approx(sum(t.volume for t in inside))
        assert candle.last_trade_ms == inside[-1].ms
    forming = [e for e in events if isinstance(e, Candle)]
    assert len(forming) == len(btc)  # one after every trade
    assert not any(isinstance(e, Trade) for e in events)


async def test_pacing_follows_the_speed_on_a_hand_driven_clock(
    tmp_path: Path, data: Recorded
) -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async with SQLiteStore(tmp_path / "rec.db") as store:
        recording = SQLiteRecording(store)
        plan = await check_replay(recording, "trade", BTC, T0, T0 + 7_000, 10)
        replay = Replay(recording, plan, clock=lambda: now[0], sleep=sleep)
        assert replay.clock.now_ms == T0
        seen = []
        async for event in replay.events():
            assert isinstance(event, Trade)
            # At 10x, the trade at T0 + k*700 ms comes k*0.07 s after the start.
            assert now[0] == pytest.approx((event.ms - T0) / 10_000)
            assert replay.clock.now_ms == event.ms
            seen.append(event)
        assert replay.clock.now_ms == T0 + 7_000 and replay.clock.finished
    assert len(seen) == 10 and len(slept) == 9


async def test_speed_zero_never_sleeps(tmp_path: Path, data: Recorded) -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("slept at speed 0")

    async with SQLiteStore(tmp_path / "rec.db") as store:
        recording = SQLiteRecording(store)
        plan = await check_replay(recording, "trade", [BTC, ETH], T0, END, 0)
        events = [e async for e in Replay(recording, plan, sleep=sleep).events()]
    assert len(events) == len(data.trades) + 1


@pytest.mark.parametrize(
    ("kinds", "markets", "start", "end", "speed", "says"),
    [
        (
            "trade",
            "KRW-XRP",
            T0,
            END,
            0,
            "KRW-XRP not in the recording (it holds: KRW-BTC, KRW-ETH)",
        ),
        ("trade", BTC, END, T0, 0, "must be before end"),
        ("trade", BTC, T0, T0, 0, "must be before end"),
        ("trade", BTC, T0, END, -1, "invalid speed"),
        ("trade", BTC, T0, END, float("nan"), "invalid speed"),
        ("trade", BTC, T0, END, "fast", "invalid speed"),
        ("candle.2m", BTC, T0, END, 0, "candle.2m"),
        ("trades", BTC, T0, END, 0, "trades"),
        (
            "trade",
            BTC,
            END + 3_600_000,
            END + 7_200_000,
            0,
            "nothing of trade for KRW-BTC was recorded from",
        ),
    ],
)
async def test_bad_input_is_refused_with_what_is_accepted(
    spine: Spine, kinds: str, markets: str, start: int, end: int, speed: object, says: str
) -> None:
    with pytest.raises(InvalidRequestError, match=says.replace("(", r"\(").replace(")", r"\)")):
        async for _ in spine.replay(kinds, markets, start=start, end=end, speed=speed):  # type: ignore[arg-type]
            pass


async def test_replay_from_postgresql(pg_space: PgSpace) -> None:
    data = recorded()
    async with Spine(db=pg_space.url) as spine:
        await recording_for(spine.store).write(
            data.trades, orderbooks=data.books, tickers=data.tickers, gaps=[data.gap]
        )
        assert await recorded_markets(recording_for(spine.store)) == [BTC, ETH]
        events = [e async for e in spine.replay(["trade", "ticker", "orderbook"], [BTC, ETH],
                                                start=T0, end=END, speed=0)]  # fmt: skip
        with pytest.raises(InvalidRequestError, match="KRW-XRP not in the recording"):
            async for _ in spine.replay("trade", "KRW-XRP", start=T0, end=END, speed=0):
                pass
    trades = [e for e in events if isinstance(e, Trade)]
    assert sorted(trades, key=lambda t: t.seq) == sorted(data.trades, key=lambda t: t.seq)
    assert sum(isinstance(e, Gap) for e in events) == 1
    times = [time_of(e) for e in events]
    assert times == sorted(times)
    assert len(events) == len(data.trades) + len(data.books) + len(data.tickers) + 1


async def test_leaving_a_replay_early_leaves_the_spine_usable(spine: Spine, data: Recorded) -> None:
    for _ in range(3):
        events = spine.replay(["trade", "orderbook"], [BTC, ETH], start=T0, end=END, speed=0)
        seen = []
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                seen.append(event)
                if len(seen) == 10:
                    break
        assert len(seen) == 10
    again = [e async for e in spine.replay("trade", ETH, start=T0, end=END, speed=0)]
    assert len(again) == sum(t.market == ETH for t in data.trades) + 1  # and the gap


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

        seen: list[tuple[float, ReplayEvent]] = []
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
    for at, item in seen:
        if isinstance(item, Trade | Orderbook | Ticker):
            assert at - 50.0 == pytest.approx((item.ms - T0) / 1000 / 10.0)
    assert sum(slept) == pytest.approx(0.2)


async def test_spine_replay_checks_its_arguments_and_plays_unpaced(
    fixed_sim: str, tmp_path: Path
) -> None:
    async with Spine(fixed_sim, db=tmp_path / "db.sqlite") as spine:
        recording = recording_for(spine.store)
        await recording.write([trade("KRW-BTC", ms) for ms in range(0, 5000, 7)])
        got = [e async for e in spine.replay(["trade"], ["KRW-BTC"], start=T0, speed=0)]
        assert [e.ms - T0 for e in got if isinstance(e, Trade)] == list(range(0, 5000, 7))
        with pytest.raises(InvalidRequestError, match="kinds"):
            await anext(spine.replay(["health"], ["KRW-BTC"], start=T0))
        with pytest.raises(InvalidRequestError, match="speed"):
            await anext(spine.replay(["trade"], ["KRW-BTC"], start=T0, speed=-1))
        with pytest.raises(InvalidRequestError, match="start must be before end"):
            await anext(spine.replay(["trade"], ["KRW-BTC"], start=T0, end=T0))
