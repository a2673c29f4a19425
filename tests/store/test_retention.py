"""Retention (``record --keep``), SQLite and PostgreSQL: on a hand-set clock the rows older
than the kept span go, the newer stay, known gaps older than the span go with their trades,
pruning goes in small transactions that writers' batches interleave with, and ``--keep`` is
read strictly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from marketspine._base.time import DAY_MS, HOUR_MS, parse_time
from marketspine._store.postgres import PostgresStore
from marketspine._store.recording import RecordedKind, RecordingStore, TradeGap
from marketspine._store.recording_store import recording_for
from marketspine._store.retention import keep_pruning, parse_keep, prune
from marketspine._store.sqlite import SQLiteStore
from marketspine.errors import InvalidRequestError
from marketspine.records import Orderbook, OrderbookUnit, Ticker, Trade

T0 = parse_time("2026-01-01")
MakeStore = Callable[[], SQLiteStore | PostgresStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "db.sqlite")
    url = request.getfixturevalue("pg_space").url
    return lambda: PostgresStore(url)


def trade(market: str, ms: int, n: int) -> Trade:
    return Trade(market, ms, 100.0 + n, 0.5, "BID", ms * 1000 + n % 1000, 100.0, float(n))


def book(market: str, ms: int) -> Orderbook:
    return Orderbook(market, ms, 1.0, 2.0, (OrderbookUnit(101.0, 1.0, 99.0, 2.0),), 0.0)


def ticker(market: str, ms: int) -> Ticker:
    return Ticker(market, ms, ms - 5, 101.5, 100.0, 102.0, 99.0, 100.0, "RISE", 1.5, 0.015,
                  0.001, 1234.5, 125_000.25, 2000.0, 200_000.5, 150.0, "2025-03-01", 50.0,
                  "2025-08-01")  # fmt: skip


async def fill(recording: RecordingStore, market: str, days: int, per_hour: int = 4) -> None:
    """Trades, books and tickers of ``market`` every 1/per_hour hour for ``days`` days
    from T0, and one known gap a day (between the day's first two trades)."""
    step = HOUR_MS // per_hour
    times = [T0 + i * step for i in range(days * 24 * per_hour)]
    trades = [trade(market, ms, i) for i, ms in enumerate(times)]
    gaps = [
        TradeGap(market, a.seq, b.seq, a.ms, b.ms, "REST trades failed", b.ms)
        for a, b in zip(trades[:: 24 * per_hour], trades[1 :: 24 * per_hour], strict=True)
    ]
    await recording.write(
        trades,
        orderbooks=[book(market, ms) for ms in times],
        tickers=[ticker(market, ms) for ms in times],
        gaps=gaps,
    )


async def test_rows_older_than_the_kept_span_go_and_newer_ones_stay(make_store: MakeStore) -> None:
    now = T0 + 10 * DAY_MS  # the hand-set clock: ten days after the first row
    keep: dict[RecordedKind, int] = {"trades": 3 * DAY_MS, "orderbooks": DAY_MS}
    async with make_store() as store:
        recording = recording_for(store)
        for market in ("KRW-BTC", "KRW-ETH"):
            await fill(recording, market, days=10)
        report = await prune(recording, keep, ["KRW-BTC"], now, batch=50)
        btc = await recording.trades("KRW-BTC", 0, now)
        assert btc and min(t.ms for t in btc) == now - 3 * DAY_MS, "exactly the older ones"
        assert await recording.trade_count("KRW-BTC") == 3 * 96
        books = await recording.orderbooks("KRW-BTC", 0, now)
        assert min(b.ms for b in books) == now - DAY_MS and len(books) == 96
        assert await recording.row_count("tickers", "KRW-BTC") == 10 * 96, "kept for ever"
        assert await recording.trade_count("KRW-ETH") == 10 * 96, "a market not pruned"
        gaps = await recording.trade_gaps("KRW-BTC")
        assert [g.to_ms >= now - 3 * DAY_MS for g in gaps] == [True] * 3
        assert report.rows == {"trades": 7 * 96, "orderbooks": 9 * 96} and report.gaps == 7
        assert report.batches == -(-7 * 96 // 50) + -(-9 * 96 // 50)
        again = await prune(recording, keep, ["KRW-BTC"], now, batch=50)
        assert again.batches == 0 and again.gaps == 0


async def test_writes_interleave_with_pruning_batches(make_store: MakeStore) -> None:
    order: list[str] = []
    async with make_store() as store:
        recording = recording_for(store)
        await fill(recording, "KRW-BTC", days=4)
        pruning = recording.prune

        async def logged_prune(kind: RecordedKind, market: str, before: int, limit: int) -> int:
            gone = await pruning(kind, market, before, limit)
            order.append("prune")
            return gone

        recording.prune = logged_prune  # type: ignore[method-assign, assignment]

        async def writer() -> None:
            for i in range(20):
                await recording.write([trade("KRW-XRP", T0 + 5 * DAY_MS + i, i)])
                order.append("write")

        keep: dict[RecordedKind, int] = {"trades": DAY_MS}
        task = asyncio.create_task(writer())
        await prune(recording, keep, ["KRW-BTC"], T0 + 4 * DAY_MS, batch=10)
        await task
    prunes = [i for i, what in enumerate(order) if what == "prune"]
    writes_between = [i for i, what in enumerate(order) if what == "write" and i < prunes[-1]]
    assert len(prunes) > 20 and len(writes_between) >= 10, order


async def test_keep_pruning_runs_in_the_background_on_its_clock(make_store: MakeStore) -> None:
    clock = [T0 + 2 * DAY_MS]
    passes = asyncio.Queue[None]()
    go_on = asyncio.Event()

    async def sleep(seconds: float) -> None:
        passes.put_nowait(None)
        await go_on.wait()
        go_on.clear()

    async with make_store() as store:
        recording = recording_for(store)
        await fill(recording, "KRW-BTC", days=4)
        keep: dict[RecordedKind, int] = {"trades": DAY_MS, "tickers": DAY_MS}
        task = asyncio.create_task(
            keep_pruning(recording, keep, ["KRW-BTC"], lambda: clock[0], batch=7, sleep=sleep)
        )
        await passes.get()
        assert (await recording.first_trade("KRW-BTC")).ms == T0 + DAY_MS  # type: ignore[union-attr]
        clock[0] += DAY_MS  # a day later, the next pass
        go_on.set()
        await passes.get()
        assert (await recording.first_trade("KRW-BTC")).ms == T0 + 2 * DAY_MS  # type: ignore[union-attr]
        assert await recording.row_count("tickers", "KRW-BTC") == 2 * 96
        assert await recording.row_count("orderbooks", "KRW-BTC") == 4 * 96
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_keep_takes_one_duration_or_kind_pairs() -> None:
    assert parse_keep("90d") == dict.fromkeys(("trades", "orderbooks", "tickers"), 90 * DAY_MS)
    assert parse_keep("0") == {}
    assert parse_keep("trade=90d, orderbook=7d,ticker=0") == {
        "trades": 90 * DAY_MS,
        "orderbooks": 7 * DAY_MS,
    }
    assert parse_keep("ORDERBOOK=12h") == {"orderbooks": 12 * HOUR_MS}
    for bad in ("", "90", "trade=90d,90d", "trades=90d", "trade=7d,trade=8d", "book=1d", "x=y"):
        with pytest.raises(InvalidRequestError, match="--keep"):
            parse_keep(bad)


async def test_a_bad_kind_is_refused_before_any_sql(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        recording = recording_for(store)
        with pytest.raises(InvalidRequestError, match="unknown recorded kind"):
            await recording.prune("candles; DROP TABLE trades", "KRW-BTC", T0, 10)  # type: ignore[arg-type]


async def test_pruning_an_empty_recording_deletes_nothing(make_store: MakeStore) -> None:
    async with make_store() as store:
        recording = recording_for(store)
        for kind in ("trades", "orderbooks", "tickers"):
            assert await recording.prune(kind, "KRW-BTC", T0, 10) == 0
        assert await recording.prune_gaps("KRW-BTC", T0) == 0
