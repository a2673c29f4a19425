"""Replay yields what ``stream`` yielded live: the simulator's trades, books and tickers of two
markets are streamed and recorded at once, and ``Spine.replay`` of the span gives back the same
records, each stream in the order it came live."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import cast

import pytest

from marketspine import Spine
from marketspine._spine.recording import record
from marketspine._store.recording_store import recording_for
from marketspine.records import Orderbook, Ticker, Trade
from marketspine.sim import SimConfig

RunSim = Callable[..., contextlib.AbstractContextManager[str]]
MARKETS = ["KRW-BTC", "KRW-ETH"]
Record = Trade | Ticker | Orderbook

pytestmark = pytest.mark.timeout(90)


def enough(live: list[Record]) -> bool:
    """100 trades, and 5 of every market, counted from when the recording started writing:
    with fewer, a market's span (its first to last trade both saw) can hold no ticker or
    book at all, and the test would compare nothing (seen on a loaded machine: KRW-ETH with
    no ticker in its span; later KRW-BTC, when counting from the stream's start let the
    recording, started later, overlap it only briefly)."""
    trades = [e.market for e in live if isinstance(e, Trade)]
    return len(trades) >= 100 and all(trades.count(m) >= 5 for m in MARKETS)


async def test_replay_gives_back_what_stream_gave_live(running_sim: RunSim, tmp_path: Path) -> None:
    live: list[Record] = []
    with running_sim(SimConfig(speed=120, rate_limit=0)) as base:
        async with Spine(base, db=tmp_path / "live.db") as spine:
            stop = asyncio.Event()
            recording_from: list[int] = []  # where in ``live`` the recording began to write

            def started(markets: list[str]) -> None:
                if not recording_from:
                    recording_from.append(len(live))

            events = cast(
                AsyncGenerator[object, None],
                spine.stream(["trade", "orderbook", "ticker"], MARKETS, maxsize=1_000_000),
            )

            async def spans_now() -> dict[str, tuple[int, int]]:
                """Per market, the span both saw so far: the stream's trades and the
                recording's overlap (empty while a market has no trade on either side)."""
                spans = {}
                for market in MARKETS:
                    mine = [e.ms for e in live if isinstance(e, Trade) and e.market == market]
                    held = await recording_for(spine.store).time_span("trades", market)
                    if mine and held is not None:
                        spans[market] = (max(mine[0], held[0]), min(mine[-1], held[1]) + 1)
                return spans

            def covered(spans: dict[str, tuple[int, int]]) -> bool:
                """Every market's span holds a ticker and a book the stream gave. Spans only
                grow, so this holds at the end too. Without it a loaded run compared nothing:
                the stream keeps only the latest ticker while its reader lags, so the ones it
                gives can all be newer than the last trade it gave (KRW-ETH, twice)."""
                return len(spans) == len(MARKETS) and all(
                    any(isinstance(e, kind) and e.market == m and lo <= e.ms < hi for e in live)
                    for m, (lo, hi) in spans.items()
                    for kind in (Ticker, Orderbook)
                )

            async def watch() -> None:
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, Trade | Ticker | Orderbook):
                            live.append(event)
                        if stop.is_set():
                            return
                        if not recording_from or not enough(live[recording_from[0] :]):
                            continue
                        if len(live) % 20 == 0 and covered(await spans_now()):
                            return

            async with asyncio.TaskGroup() as group:
                recording = group.create_task(
                    record(spine, MARKETS, orderbook_every_ms=0, stop=stop, on_start=started)
                )
                async with asyncio.timeout(60):
                    await watch()
                stop.set()
            assert recording.result().counts.trades > 0
            spans = await spans_now()
            assert sorted(spans) == sorted(MARKETS), spans
            start = min(lo for lo, _ in spans.values())
            end = max(hi for _, hi in spans.values())
            played: list[Record] = [
                e async for e in spine.replay(["trade", "orderbook", "ticker"], MARKETS,
                                              start=start, end=end, speed=0)
                if isinstance(e, Trade | Ticker | Orderbook)
            ]  # fmt: skip

    def within(items: list[Record], kind: type, market: str) -> list[Record]:
        lo, hi = spans[market]
        return [e for e in items if isinstance(e, kind) and e.market == market
                and lo <= e.ms < hi]  # fmt: skip

    for market in MARKETS:
        live_trades = within(live, Trade, market)
        assert live_trades and within(played, Trade, market) == live_trades, market
        for kind in (Ticker, Orderbook):
            # The stream keeps the latest ticker and book when it falls behind; the recording
            # keeps every one: what the stream gave is among them, in the same order.
            replayed = within(played, kind, market)
            streamed = within(live, kind, market)
            rest = iter(replayed)
            assert streamed and all(e in rest for e in streamed), (market, kind)
