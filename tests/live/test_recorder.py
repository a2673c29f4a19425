"""The recorder on scripted events and a scripted REST history: every trade stored once in
order, an unfillable hole stored (and alerted) as a known gap between the trades around it,
a queue overflow filled from REST, books thinned per interval, what is held committed on
stop, a failing store ending the run; and the startup backfill of holes at LOW priority."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from marketspine._budget.rules import Priority
from marketspine._live.listener import Gap, Health, Overflow
from marketspine._live.recorder import Recorder
from marketspine._live.trade_backfill import backfill_market
from marketspine._store.recording import TradeGap
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore
from marketspine.errors import StoreError, UpstreamError
from marketspine.records import Orderbook, OrderbookUnit, Ticker, Trade

MARKET = "KRW-BTC"
T0 = 1_790_000_000_000


def trade(n: int, market: str = MARKET, *, best: bool = True) -> Trade:
    ms = T0 + n * 10
    quotes = (101.0 + n, 0.5, 99.0 + n, 0.25) if best else (None,) * 4
    return Trade(market, ms, 100.0 + n, 0.125, "BID" if n % 2 else "ASK", ms * 10_000,
                 100.0, float(n), *quotes)  # fmt: skip


class FakeTrades:
    """Upbit's REST trades by cursor over a known history (newest first); can fail."""

    def __init__(self, history: list[Trade], *, fail: bool = False) -> None:
        self.history = sorted(history, key=lambda t: t.seq)
        self.fail = fail
        self.priorities: list[Priority] = []

    async def trades(
        self,
        market: str,
        *,
        count: int = 200,
        cursor: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Trade]:
        self.priorities.append(priority)
        if self.fail:
            raise UpstreamError("simulated 503 from /v1/trades/ticks")
        before = [
            t for t in self.history if t.market == market and (cursor is None or t.seq < cursor)
        ]
        return before[::-1][:count]


async def scripted(events: list[object], done: asyncio.Event) -> AsyncIterator[object]:
    for event in events:
        yield event
    await done.wait()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "rec.sqlite") as opened:
        yield opened


async def run(recorder: Recorder, events: Sequence[object]) -> None:
    """Record ``events`` (the stream then stays open) and stop once they are consumed."""
    stop = asyncio.Event()
    consumed = asyncio.Event()

    async def feed() -> AsyncIterator[object]:
        for event in events:
            yield event
        consumed.set()
        await asyncio.Event().wait()  # a live stream never ends by itself

    async def stopper() -> None:
        await consumed.wait()
        stop.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(stopper())
        await recorder.run(feed(), stop)


async def test_each_trade_is_stored_once_and_what_is_held_is_committed_on_stop(
    store: SQLiteStore,
) -> None:
    recording = SQLiteRecording(store)
    # a long flush interval: everything is still held when stop comes
    recorder = Recorder(recording, None, flush_every_s=3600, batch_trades=7)
    events: list[object] = [trade(n) for n in range(20)]
    events += [Health("connected", "ok"), trade(5), trade(20, "KRW-ETH")]
    await run(recorder, events)
    assert await recording.trades(MARKET, 0, 2 * T0) == [trade(n) for n in range(20)]
    assert await recording.trade_count() == 21
    assert recorder.counts.trades == 21
    assert await recording.trade_gaps() == []


async def test_an_unfillable_hole_is_a_known_gap_between_the_trades_around_it(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "marketspine.record")
    recording = SQLiteRecording(store)
    await recording.write([trade(0), trade(1)])
    recorder = Recorder(recording, None, last={MARKET: trade(1)}, wall_ms=lambda: 42)
    hole = Gap(MARKET, trade(1).ms, trade(9).ms, 2, False, "REST trades failed: 503")
    # the stream announces the hole, then the newest part it could fetch, then goes on
    await run(recorder, [hole, trade(7, best=False), trade(8, best=False), trade(9)])
    assert await recording.trade_gaps(MARKET) == [
        TradeGap(MARKET, trade(1).seq, trade(7).seq, trade(1).ms, trade(7).ms,
                 "REST trades failed: 503", 42)
    ]  # fmt: skip
    assert [t.seq for t in await recording.trades(MARKET, 0, 2 * T0)] == [
        trade(n).seq for n in (0, 1, 7, 8, 9)
    ]
    alert = next(r for r in caplog.records if getattr(r, "event", "") == "trade_gap_recorded")
    assert alert.key == MARKET  # type: ignore[attr-defined]
    assert "REST trades failed: 503" in alert.getMessage()
    assert recorder.counts.gaps == 1


async def test_a_complete_gap_and_a_first_trade_are_no_known_gap(store: SQLiteStore) -> None:
    recording = SQLiteRecording(store)
    recorder = Recorder(recording, None)
    refill = Gap(MARKET, trade(3).ms, trade(6).ms, 2)
    unjoined = Gap("KRW-ETH", 0, 1, 0, False, "no join")  # before the market's first trade
    await run(recorder, [trade(3), refill, trade(4), trade(5), trade(6), unjoined,
                         trade(1, "KRW-ETH")])  # fmt: skip
    assert await recording.trade_gaps() == []
    assert await recording.trade_count() == 5


async def test_an_overflow_is_filled_from_rest_and_what_rest_lacks_is_a_gap(
    store: SQLiteStore,
) -> None:
    recording = SQLiteRecording(store)
    rest = FakeTrades([trade(n, best=False) for n in range(30)])
    recorder = Recorder(recording, rest, last={MARKET: trade(2)})
    await recording.write([trade(2)])
    await run(recorder, [Overflow("trade", MARKET, 5), trade(9), trade(10)])
    stored = await recording.trades(MARKET, 0, 2 * T0)
    assert stored == [trade(2), *(trade(n, best=False) for n in range(3, 9)), trade(9), trade(10)]
    assert recorder.counts.filled == 6
    assert await recording.trade_gaps() == []
    # with REST down the hole stays, recorded with both reasons
    rest.fail = True
    recorder = Recorder(recording, rest, last={MARKET: trade(10)})
    await run(recorder, [Overflow("trade", MARKET, 3), trade(15)])
    (gap,) = await recording.trade_gaps()
    assert (gap.from_seq, gap.to_seq) == (trade(10).seq, trade(15).seq)
    assert "fell behind" in gap.reason and "503" in gap.reason


async def test_books_are_thinned_per_interval_and_tickers_all_kept(store: SQLiteStore) -> None:
    recording = SQLiteRecording(store)
    unit = (OrderbookUnit(101.0, 1.0, 99.0, 2.0),)
    books = [
        Orderbook(MARKET, T0 + ms, 1.0, 2.0, unit, 0.0) for ms in (0, 300, 999, 1000, 1500, 2600)
    ]
    tick = Ticker(MARKET, T0, T0, 1.0, 1.0, 1.0, 1.0, 1.0, "EVEN", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                  0.0, 1.0, "2026-01-01", 1.0, "2026-01-01")  # fmt: skip
    await run(Recorder(recording, None, orderbook_every_ms=1000), [*books, tick])
    assert [b.ms - T0 for b in await recording.orderbooks(MARKET, 0, 2 * T0)] == [0, 1000, 2600]
    assert await recording.tickers(MARKET, 0, 2 * T0) == [tick]
    await run(Recorder(recording, None), books)  # 0: every change
    assert len(await recording.orderbooks(MARKET, 0, 2 * T0)) == len(books)


async def test_a_failing_store_ends_the_run_with_its_error(store: SQLiteStore) -> None:
    recording = SQLiteRecording(store)
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await Recorder(recording, None, flush_every_s=0.01).run(
            scripted([trade(1)], asyncio.Event()), asyncio.Event()
        )


async def test_backfill_closes_a_gap_page_by_page_at_low_priority(store: SQLiteStore) -> None:
    recording = SQLiteRecording(store)
    history = [trade(n, best=False) for n in range(2000)]
    gap = TradeGap(MARKET, history[100].seq, history[1800].seq, history[100].ms,
                   history[1800].ms, "REST trades failed", 1)  # fmt: skip
    await recording.write([history[100], history[1800]], gaps=[gap])
    rest = FakeTrades(history)
    report = await backfill_market(rest, recording, MARKET, horizon_ms=0, wall_ms=lambda: 7)
    assert await recording.trade_gaps() == []
    # the span before the first stored trade is walked too, to the start of history
    assert await recording.trades(MARKET, 0, 2 * T0) == history[:1801]
    assert report.gaps_closed == 1 and report.trades == 1799
    assert set(rest.priorities) == {Priority.LOW}


async def test_backfill_leaves_what_is_older_than_its_horizon_as_a_shrunk_gap(
    store: SQLiteStore,
) -> None:
    recording = SQLiteRecording(store)
    history = [trade(n, best=False) for n in range(2000)]
    gap = TradeGap(MARKET, history[100].seq, history[1800].seq, history[100].ms,
                   history[1800].ms, "REST trades failed", 1)  # fmt: skip
    await recording.write([history[100], history[1800]], gaps=[gap])
    horizon = history[1000].ms
    report = await backfill_market(
        FakeTrades(history), recording, MARKET, horizon_ms=horizon, wall_ms=lambda: 7
    )
    (left,) = await recording.trade_gaps()
    assert (left.from_seq, left.to_seq, left.to_ms) == (
        gap.from_seq,
        history[1000].seq,
        history[1000].ms,
    )
    assert "older than" in left.reason and left.found_ms == 7
    assert report.gaps_left == 1
    assert await recording.trade_count() == 802  # 1000..1800 and the trade before the gap
    # REST failing leaves the gap as it was, saying why
    await backfill_market(FakeTrades(history, fail=True), recording, MARKET, horizon_ms=0,
                          wall_ms=lambda: 8)  # fmt: skip
    (still,) = await recording.trade_gaps()
    assert still.to_seq == left.to_seq and "503" in still.reason
