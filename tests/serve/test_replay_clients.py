"""Contract: an hour of the simulator's trades, recorded, replayed through ``marketspine
replay``'s server at speed 0 to the official upbit-sdk and to ccxt pro (``urls`` override,
loopback): each receives exactly the recorded trades, in order, every field its parser keeps."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from helpers import SIM_NOW_MS, require_module
from recorded_truth import simulated_trades
from replay_support import replay_server

from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Trade
from marketspine.sim import History

ccxt_pro = require_module(
    "ccxt.pro", "ccxt is not installed (a dev dependency: pip install -e '.[dev]')"
)
require_module("upbit", "upbit-sdk is not installed (a dev dependency: pip install -e '.[dev]')")
from upbit import AsyncUpbit  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BTC, ETH = "KRW-BTC", "KRW-ETH"
HOUR_MS = 3_600_000
START, END = SIM_NOW_MS - HOUR_MS, SIM_NOW_MS


@pytest.fixture(scope="module")
def recorded_hour(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Trade]]]:
    """The simulator's trades of BTC and ETH over an hour, as its WebSocket sends them,
    written into a recording."""
    history = History(1)
    trades = {}
    for market in (BTC, ETH):
        found = history.trades_between(market, START, END)
        first, last = (Trade(market, t.ms, t.price, t.volume, "BID", t.seq, 0.0, 0.0)
                       for t in (found[0], found[-1]))  # fmt: skip
        trades[market] = simulated_trades(history, market, first, last)
    db = tmp_path_factory.mktemp("hour") / "hour.db"

    async def write() -> None:
        async with SQLiteStore(db) as store:
            await SQLiteRecording(store).write(trades[BTC] + trades[ETH])

    asyncio.run(write())
    return db, trades


async def test_upbit_sdk_receives_exactly_the_recorded_trades(
    recorded_hour: tuple[Path, dict[str, list[Trade]]],
) -> None:
    db, recorded = recorded_hour
    want = sorted(recorded[BTC] + recorded[ETH], key=lambda t: (t.ms, t.seq))
    with replay_server(db, start_ms=START, end_ms=END, kinds=("trade",)) as url:
        client = AsyncUpbit(base_url=url, websocket_base_url=url.replace("http", "ws", 1))
        try:
            async with client.ws_stream.subscribe(trade=[BTC, ETH]) as stream:
                got: list[Any] = []
                async with asyncio.timeout(90):
                    while len(got) < len(want):
                        got.append(await stream.recv())
        finally:
            await client.close()
    assert [(e.code, e.sequential_id) for e in got] == [(t.market, t.seq) for t in want]
    assert [
        (e.trade_timestamp, float(e.trade_price), float(e.trade_volume), e.ask_bid) for e in got
    ] == [(t.ms, t.price, t.volume, t.side) for t in want]
    assert [float(e.best_bid_price) for e in got] == [t.best_bid_price for t in want]
    for market in (BTC, ETH):
        kinds = [e.stream_type for e in got if e.code == market]
        assert kinds[0] == "SNAPSHOT" and set(kinds[1:]) == {"REALTIME"}


async def test_ccxt_pro_receives_exactly_the_recorded_trades(
    recorded_hour: tuple[Path, dict[str, list[Trade]]],
) -> None:
    db, recorded = recorded_hour
    want = recorded[BTC]
    with replay_server(db, [BTC], start_ms=START, end_ms=END, kinds=("trade",)) as url:
        exchange = ccxt_pro.upbit({"enableRateLimit": False, "timeout": 10_000})
        exchange.options["tradesLimit"] = 100_000  # its cache keeps 1,000 by default
        ws = url.replace("http", "ws", 1) + "/websocket/v1"
        exchange.urls["api"] = {"public": url, "private": url, "ws": ws}
        got: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(90):
                while len(got) < len(want):
                    got += await exchange.watch_trades("BTC/KRW")
        finally:
            with contextlib.suppress(Exception):
                await exchange.close()
    assert [int(t["id"]) for t in got] == [t.seq for t in want]
    assert [(t["timestamp"], t["price"], t["amount"]) for t in got] == [
        (t.ms, t.price, t.volume) for t in want
    ]
    assert [t["side"] for t in got] == ["buy" if t.side == "BID" else "sell" for t in want]
