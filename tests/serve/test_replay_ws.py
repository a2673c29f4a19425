"""``marketspine replay``'s server over a small recording, with a raw WebSocket client: the
recorded trades, tickers and books in exchange time order, the first of each pair as the
snapshot, in DEFAULT and SIMPLE keys with the orderbook depth asked; PING, LIST_SUBSCRIPTIONS,
is_only_snapshot after the end; a bad request answered with Upbit's error frame and close;
/v1 paths and /api/status carrying the replay clock; an unknown market is Upbit's 404."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from replay_support import BTC, ETH, T0, Recorded, make_recording, replay_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from marketspine._base.time import parse_time

pytestmark = pytest.mark.timeout(60)

END = T0 + 10 * 60_000


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorded]:
    db = tmp_path_factory.mktemp("replay") / "rec.db"
    return db, make_recording(db)


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/websocket/v1"


async def read_all(ws: Any, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out.append(json.loads(await ws.recv()))
    return out


async def test_a_client_receives_the_recording_in_time_order(data: tuple[Path, Recorded]) -> None:
    db, rec = data
    with replay_server(db) as url:
        async with connect(ws_url(url), max_size=None) as ws:
            await ws.send(json.dumps([
                {"ticket": "bot"},
                {"type": "trade", "codes": [BTC, ETH]},
                {"type": "ticker", "codes": [BTC]},
                {"type": "orderbook", "codes": [f"{ETH}.5"]},
            ]))  # fmt: skip
            btc_tickers = [t for t in rec.tickers if t.market == BTC]
            eth_books = [b for b in rec.books if b.market == ETH]
            frames = await read_all(ws, len(rec.trades) + len(btc_tickers) + len(eth_books))
            status = await asyncio.to_thread(httpx.get, url + "/api/status", timeout=10)
            # Nothing more: the recording has been played whole.
            await ws.send("PING")
            assert json.loads(await ws.recv()) == {"status": "UP"}
        # A second client after the end: the last trade as its snapshot, and nothing else.
        async with connect(ws_url(url)) as late:
            await late.send(json.dumps([
                {"ticket": "late"},
                {"type": "trade", "codes": [BTC], "is_only_snapshot": True},
                {"format": "SIMPLE"},
            ]))  # fmt: skip
            snapshot = json.loads(await late.recv())
            await late.send("PING")
            assert json.loads(await late.recv()) == {"status": "UP"}
    trades = [f for f in frames if f["type"] == "trade"]
    want = sorted(rec.trades, key=lambda t: (t.ms, t.seq))
    assert [(f["code"], f["sequential_id"]) for f in trades] == [(t.market, t.seq) for t in want]
    first = want[0]
    assert trades[0] == {
        "type": "trade", "code": first.market, "timestamp": first.ms,
        "trade_date": "2026-09-21", "trade_time": "14:13:20", "trade_timestamp": first.ms,
        "trade_price": first.price, "trade_volume": first.volume, "ask_bid": first.side,
        "prev_closing_price": first.prev_close, "change": "EVEN", "change_price": 0.0,
        "sequential_id": first.seq, "best_ask_price": first.best_ask_price,
        "best_ask_size": first.best_ask_size, "best_bid_price": first.best_bid_price,
        "best_bid_size": first.best_bid_size, "stream_type": "SNAPSHOT",
    }  # fmt: skip
    times = [f["timestamp"] for f in frames]
    assert times == sorted(times)
    for kind, code in (("trade", BTC), ("trade", ETH), ("ticker", BTC), ("orderbook", ETH)):
        mine = [f["stream_type"] for f in frames if f["type"] == kind and f["code"] == code]
        assert mine[0] == "SNAPSHOT" and set(mine[1:]) == {"REALTIME"}, (kind, code)
    books = [f for f in frames if f["type"] == "orderbook"]
    assert len(books) == len(eth_books) and all(len(b["orderbook_units"]) == 5 for b in books)
    assert [t["timestamp"] for t in frames if t["type"] == "ticker"] == [t.ms for t in btc_tickers]
    assert status.json()["replay"]["state"] == "finished"
    assert status.json()["replay"]["time"] == "2026-09-21T14:23:20.000Z"
    assert status.headers["X-Marketspine-Replay-Time"] == "2026-09-21T14:23:20.000Z"
    last_btc = max((t for t in rec.trades if t.market == BTC), key=lambda t: t.seq)
    assert snapshot["ty"] == "trade" and snapshot["sid"] == last_btc.seq
    assert snapshot["st"] == "SNAPSHOT"


async def test_protocol_requests_and_a_refused_one(data: tuple[Path, Recorded]) -> None:
    db, _ = data
    # The first event is 600 s of replay time away, 10 days at 0.001x: nothing races.
    with replay_server(db, start_ms=T0 - 600_000, speed=0.001) as url:
        async with connect(ws_url(url)) as ws:
            tickers = {"type": "ticker", "codes": [BTC, "KRW-XRP"]}
            await ws.send(json.dumps([{"ticket": "t"}, tickers, {"format": "SIMPLE"}]))
            await ws.send(json.dumps([{"ticket": "t"}, {"method": "LIST_SUBSCRIPTIONS"}]))
            listed = json.loads(await ws.recv())
            await ws.send('[{"ticket": "t"}, {"type": "nonsense", "codes": ["KRW-BTC"]}]')
            error = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    # An unknown code is dropped silently, as on Upbit.
    assert listed == {"mthd": "LIST_SUBSCRIPTIONS", "rslt": [{"ty": "ticker", "cds": [BTC]}],
                      "tckt": "t"}  # fmt: skip
    assert error["error"]["name"] == "INVALID_PARAM"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_quotation_paths_answer_at_the_replay_clock(data: tuple[Path, Recorded]) -> None:
    db, rec = data
    with replay_server(db, start_ms=T0 + 60_000, speed=0.001) as url:
        markets = httpx.get(url + "/v1/market/all", timeout=10)
        trades = httpx.get(url + "/v1/trades/ticks", params={"market": BTC, "count": 3}, timeout=10)
        missing = httpx.get(url + "/v1/ticker", params={"markets": "KRW-XRP"}, timeout=10)
        bad = httpx.get(url + "/v1/candles/minutes/7", params={"market": BTC}, timeout=10)
        status = httpx.get(url + "/api/status", timeout=10).json()["replay"]
    assert [m["market"] for m in markets.json()] == [BTC, ETH]
    clock = trades.headers["X-Marketspine-Replay-Time"]
    assert clock.startswith("2026-09-21T14:14:2")  # T0 + 60 s and a breath at 0.001x
    assert trades.headers["X-Marketspine-Source"] == "replay"
    before = sorted((t for t in rec.trades if t.market == BTC and t.ms <= T0 + 60_000),
                    key=lambda t: t.seq)[-3:][::-1]  # fmt: skip
    assert [t["sequential_id"] for t in trades.json()] == [t.seq for t in before]
    assert missing.status_code == 404
    assert missing.json() == {"error": {"name": 404, "message": "Code not found"}}
    assert bad.status_code == 400 and "unit" in bad.json()["error"]["message"]
    assert status["state"] == "playing" and status["speed"] == 0.001


def candle_upto(rec: Recorded, market: str, start_ms: int, last_ms: int) -> dict[str, Any]:
    inside = sorted((t for t in rec.trades if t.market == market
                     and start_ms <= t.ms <= last_ms and t.ms < start_ms + 60_000),
                    key=lambda t: t.ms)  # fmt: skip
    return {
        "opening_price": inside[0].price,
        "high_price": max(t.price for t in inside),
        "low_price": min(t.price for t in inside),
        "trade_price": inside[-1].price,
        "candle_acc_trade_volume": pytest.approx(sum(t.volume for t in inside)),
        "timestamp": inside[-1].ms,
    }


async def test_candle_types_are_built_from_the_trades_played(
    data: tuple[Path, Recorded],
) -> None:
    db, rec = data
    btc = sorted((t for t in rec.trades if t.market == BTC), key=lambda t: t.ms)
    # At 60x the three minutes take three seconds: the second client comes in the middle.
    with replay_server(db, speed=60) as url:
        async with connect(ws_url(url)) as first, connect(ws_url(url)) as late:
            await first.send(json.dumps([{"ticket": "a"}, {"type": "candle.1m", "codes": [BTC]},
                                         {"type": "trade", "codes": [BTC]}]))  # fmt: skip
            frames = await read_all(first, 2 * len(btc) // 3)  # a third of the trades
            # A client coming in the middle: its candle is built from the window's trades
            # played so far, then from every trade after.
            await late.send(json.dumps([{"ticket": "b"}, {"type": "candle.1m", "codes": [BTC]}]))
            later: list[dict[str, Any]] = []
            reader = asyncio.ensure_future(read_all(first, 2 * len(btc) - len(frames)))
            while not later or later[-1]["timestamp"] != btc[-1].ms:
                later.append(json.loads(await late.recv()))
            frames += await reader
    candles = [f for f in frames if f["type"] == "candle.1m"]
    assert len(candles) == len(btc) and candles[0]["stream_type"] == "SNAPSHOT"
    assert later[0]["stream_type"] == "SNAPSHOT" and len(later) < len(btc)
    for frame in candles + later:
        start = parse_time(frame["candle_date_time_utc"])
        want = candle_upto(rec, BTC, start, frame["timestamp"])
        assert {k: frame[k] for k in want} == want
