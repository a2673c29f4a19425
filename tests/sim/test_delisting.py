"""Listing and delisting in the simulator: markets delisted in the seeded past, delisting one
now (``POST /sim/delist``), ``GET /sim/markets``, and what REST and the WebSocket show."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, format_utc
from marketspine._upbit.ws_format import SubscribeRequest, parse_request
from marketspine.sim import SimConfig, create_app
from marketspine.sim._feed import Feed

pytestmark = pytest.mark.timeout(30)

GONE = "KRW-HUNT"  # delisted 2026-06-25 in the seeded history (before SIM_NOW_MS)
CODE_NOT_FOUND = {"error": {"name": 404, "message": "Code not found"}}
QUOTE_PATHS = (
    "/v1/candles/minutes/1?market={}",
    "/v1/candles/days?market={}",
    "/v1/candles/seconds?market={}",
    "/v1/ticker?markets={}",
    "/v1/trades/ticks?market={}",
    "/v1/orderbook?markets={}",
)


def sim_of(app: Starlette) -> Any:
    return app.state.sim


async def markets(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {row["market"]: row for row in (await client.get("/sim/markets")).json()}


async def test_sim_markets_lists_every_market_with_listing_and_delisting(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    rows = await markets(sim_client)
    history = sim_of(sim_app).history
    assert list(rows) == [m.code for m in history.markets]  # listed or not
    gone = rows[GONE]
    assert (gone["state"], gone["delisted_at"]) == ("DELISTED", "2026-06-25T00:00:00Z")
    assert gone["delisted_ms"] == history.market(GONE).delisted_ms < sim_now_ms
    assert gone["listed_ms"] < gone["delisted_ms"]
    # KRW-WAL is listed on 2026-10-20, after the simulated now of this test.
    assert rows["KRW-WAL"]["state"] == "UPCOMING"
    assert rows["KRW-WAL"]["listed_at"] == "2026-10-20T00:00:00Z"
    assert rows["KRW-BTC"]["state"] == "ACTIVE" and rows["KRW-BTC"]["delisted_at"] is None
    assert sum(row["state"] == "DELISTED" for row in rows.values()) >= 3


async def test_a_market_delisted_in_the_past_is_gone_from_rest(
    sim_client: httpx.AsyncClient, sim_app: Starlette, sim_now_ms: int
) -> None:
    listed = [row["market"] for row in (await sim_client.get("/v1/market/all")).json()]
    assert GONE not in listed and "KRW-BTC" in listed
    for path in QUOTE_PATHS:
        response = await sim_client.get(path.format(GONE))
        assert (response.status_code, response.json()) == (404, CODE_NOT_FOUND), path
    # Its history ends the day it was delisted: trades before, none after.
    history = sim_of(sim_app).history
    delisted_ms = history.market(GONE).delisted_ms
    last = history.last_trade(GONE, sim_now_ms)
    assert last is not None and delisted_ms - 30 * DAY_MS < last.ms < delisted_ms
    assert history.trades_between(GONE, delisted_ms, sim_now_ms) == []


async def test_delisting_now_takes_the_market_off_upbit(
    sim_client: httpx.AsyncClient, sim_now_ms: int
) -> None:
    assert (await sim_client.get("/v1/ticker?markets=KRW-XRP")).status_code == 200
    answer = await sim_client.post("/sim/delist", json={"market": "KRW-XRP"})
    assert answer.status_code == 200
    assert answer.json() == {
        "market": "KRW-XRP",
        "delisted_at": format_utc(sim_now_ms) + "Z",
        "delisted_ms": sim_now_ms,
    }
    listed = [row["market"] for row in (await sim_client.get("/v1/market/all")).json()]
    assert "KRW-XRP" not in listed
    for path in QUOTE_PATHS:
        response = await sim_client.get(path.format("KRW-XRP"))
        assert (response.status_code, response.json()) == (404, CODE_NOT_FOUND), path
    # Asking for it among others fails the whole call, as any unknown code does.
    assert (await sim_client.get("/v1/ticker?markets=KRW-BTC,KRW-XRP")).status_code == 404
    row = (await markets(sim_client))["KRW-XRP"]
    assert (row["state"], row["delisted_ms"]) == ("DELISTED", sim_now_ms)


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"market": "KRW-NOPE"}, 404, "GET /sim/markets lists every market"),
        ({"market": GONE}, 409, "was delisted at 2026-06-25T00:00:00Z"),
        ({"market": "KRW-WAL"}, 409, "is not listed yet"),
        ({"code": "KRW-BTC"}, 400, '{"market": "KRW-..."}'),
        (["KRW-BTC"], 400, '{"market": "KRW-..."}'),
    ],
)
async def test_bad_delist_requests_say_what_is_wrong(
    sim_client: httpx.AsyncClient, body: Any, status: int, expected: str
) -> None:
    answer = await sim_client.post("/sim/delist", json=body)
    assert answer.status_code == status
    assert expected in answer.json()["error"]["message"]
    listed = [row["market"] for row in (await sim_client.get("/v1/market/all")).json()]
    assert "KRW-BTC" in listed


def feed_of(app: Starlette, now_ms: int, *streams: dict[str, Any]) -> Feed:
    request = parse_request(json.dumps([{"ticket": "t"}, *streams]))
    assert isinstance(request, SubscribeRequest)
    sim = sim_of(app)
    return Feed.from_request(sim.history, request, "DEFAULT", now_ms, "kr", sim.delisted_ms)


def test_the_feed_says_delisted_once_then_goes_silent(sim_app: Starlette, sim_now_ms: int) -> None:
    streams = [{"type": t, "codes": ["KRW-BTC"]} for t in ("ticker", "trade", "orderbook")]
    feed = feed_of(sim_app, sim_now_ms, *streams, {"type": "candle.1m", "codes": ["KRW-BTC"]})
    feed.tick(sim_now_ms, 0.0)
    assert feed.tick(sim_now_ms + 5_000, 1.0)  # KRW-BTC trades every second or so
    delisted_ms = sim_now_ms + 7_000
    sim_of(sim_app).delisted["KRW-BTC"] = delisted_ms
    last = feed.tick(sim_now_ms + 60_000, 2.0)
    trades = [m for m in last if m["type"] == "trade"]
    assert trades and all(m["trade_timestamp"] < delisted_ms for m in trades)
    tickers = [m for m in last if m["type"] == "ticker"]
    assert [m["market_state"] for m in tickers] == ["DELISTED"]
    assert tickers[0]["trade_timestamp"] < delisted_ms
    assert not any(m["type"] == "orderbook" for m in last)
    assert feed.tick(sim_now_ms + 120_000, 3.0) == []
    assert feed.tick(sim_now_ms + 600_000, 9.0) == []


def test_a_delisted_code_is_dropped_from_a_new_subscription(
    sim_app: Starlette, sim_now_ms: int
) -> None:
    feed = feed_of(sim_app, sim_now_ms, {"type": "ticker", "codes": [GONE, "KRW-BTC"]})
    assert feed.listing() == [("ticker", ["KRW-BTC"], None)]


async def test_a_socket_sees_delisted_then_nothing(
    running_sim: Callable[..., AbstractContextManager[str]], sim_clock: Any
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=sim_clock)
    with running_sim(app=app) as url:
        ws_url = url.replace("http://", "ws://") + "/websocket/v1"
        async with websockets.connect(ws_url, ping_interval=None, close_timeout=0.5) as ws:
            await ws.send(json.dumps([{"ticket": "t"}, {"type": "ticker", "codes": ["KRW-BTC"]}]))
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert snapshot["market_state"] == "ACTIVE"
            async with httpx.AsyncClient(base_url=url) as http:
                answer = await http.post("/sim/delist", json={"market": "KRW-BTC"})
                assert answer.status_code == 200
            sim_clock.advance(60_000)
            states = []
            async with asyncio.timeout(5):
                while "DELISTED" not in states:
                    states.append(json.loads(await ws.recv())["market_state"])
            assert states[-1] == "DELISTED" and states.count("DELISTED") == 1
            sim_clock.advance(60_000)  # trades would have happened: nothing is sent
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
