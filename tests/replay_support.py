"""A small recording written straight into a store, for the replay tests: trades of two
markets interleaved in time, books, tickers, and one known trade gap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from marketspine._store.recording import TradeGap
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Orderbook, OrderbookUnit, Side, Ticker, Trade

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
BTC, ETH = "KRW-BTC", "KRW-ETH"


def trade(market: str, n: int, ms: int) -> Trade:
    base = 100_000_000.0 if market == BTC else 5_000_000.0
    price = base + (n % 7) * 1000
    side: Side = "BID" if n % 2 else "ASK"
    seq = ms * 10_000 + n
    best = (price + 1000, 0.5, price - 1000, 0.25)
    return Trade(market, ms, price, 0.001 * (1 + n % 5), side, seq, base, price - base, *best)


def book(market: str, ms: int, mid: float) -> Orderbook:
    units = tuple(OrderbookUnit(mid + 1000 * (i + 1), 0.1 * (i + 1), mid - 1000 * (i + 1), 0.2)
                  for i in range(15))  # fmt: skip
    return Orderbook(market, ms, sum(u.ask_size for u in units), 0.2 * 15, units, 0.0)


def ticker(t: Trade, ms: int) -> Ticker:
    return Ticker(t.market, ms, t.ms, t.price, t.prev_close, t.price + 5000, t.price - 5000,
                  t.prev_close, "RISE" if t.change_price > 0 else "EVEN", t.change_price,
                  t.change_price / t.prev_close, t.volume, 10.0, 1e9, 20.0, 2e9, 2e8,
                  "2026-01-02", 5e7, "2025-11-03", t.side, 4.0, 6.0, "ACTIVE", None)  # fmt: skip


@dataclass
class Recorded:
    trades: list[Trade]
    books: list[Orderbook]
    tickers: list[Ticker]
    gap: TradeGap


def recorded() -> Recorded:
    """BTC trades every 700 ms, ETH every 1100 ms, over 3 minutes from T0 (some sharing a
    millisecond across markets); a book and a ticker 1 ms after every 5th trade; a known
    gap in ETH before its 50th trade."""
    trades = [trade(BTC, n, T0 + n * 700) for n in range(260)]
    trades += [trade(ETH, n, T0 + n * 1100) for n in range(165)]
    books = [book(t.market, t.ms + 1, t.price) for t in trades if t.seq % 5 == 0]
    tickers = [ticker(t, t.ms + 1) for t in trades if t.seq % 5 == 0]
    eth = [t for t in trades if t.market == ETH]
    before, after = eth[48], eth[49]
    gap = TradeGap(ETH, before.seq, after.seq, before.ms, after.ms, "REST walk failed", T0)
    return Recorded(trades, books, tickers, gap)


async def write_recording(path: Path, data: Recorded) -> None:
    async with SQLiteStore(path) as store:
        await SQLiteRecording(store).write(
            data.trades, orderbooks=data.books, tickers=data.tickers, gaps=[data.gap]
        )


def make_recording(path: Path) -> Recorded:
    data = recorded()
    asyncio.run(write_recording(path, data))
    return data


@contextlib.contextmanager
def replay_server(
    db: Path,
    markets: list[str] | None = None,
    *,
    start_ms: int = T0,
    end_ms: int = T0 + 10 * 60_000,
    speed: float = 0.0,
    kinds: tuple[str, ...] = ("trade", "orderbook", "ticker"),
) -> Iterator[str]:
    """``marketspine replay``'s app over the recording in ``db`` on a free loopback port, in
    a background thread (as the command runs it); yields its base URL."""
    from marketspine._serve.replay_app import replay_app
    from marketspine._serve.security import AllowedHosts
    from marketspine._serve.server_thread import server_thread
    from marketspine._spine.replay import ReplayPlan, check_replay
    from marketspine._store.recording import RecordingStore
    from marketspine._store.recording_reads import recorded_markets

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[RecordingStore]:
        async with SQLiteStore(db, read_only=True) as store:
            yield SQLiteRecording(store)

    async def plan_of(recording: RecordingStore) -> ReplayPlan:
        codes = markets or await recorded_markets(recording)
        return await check_replay(recording, list(kinds), codes, start_ms, end_ms, speed)

    app = replay_app(opened, plan_of, AllowedHosts(["127.0.0.1"]))
    with server_thread(app, ws_ping_interval=None, ws_per_message_deflate=False) as url:
        yield url
