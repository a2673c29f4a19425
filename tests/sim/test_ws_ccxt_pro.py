"""A second client nobody here wrote: ccxt pro's ``upbit`` watches the simulator's
WebSocket (binary frames, DEFAULT keys) and its answers agree with the simulator's REST."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from helpers import require_module

from marketspine.sim import SimConfig, create_app

ccxt_pro = require_module(
    "ccxt.pro", "ccxt is not installed (a dev dependency: pip install -e '.[dev]')"
)

pytestmark = pytest.mark.timeout(30)


async def test_ccxt_pro_watches_ticker_trades_and_book(
    running_sim: Callable[..., AbstractContextManager[str]], sim_clock: Any
) -> None:
    app = create_app(SimConfig(), clock=sim_clock)
    with running_sim(app=app) as url:
        exchange = ccxt_pro.upbit()
        exchange.urls["api"] = {
            "public": url,
            "private": url,
            "ws": url.replace("http://", "ws://") + "/websocket/v1",
        }
        try:
            await exchange.load_markets()
            ticker = await exchange.watch_ticker("BTC/KRW")
            await exchange.watch_trades("BTC/KRW")  # subscribed: the snapshot trade is in
            sim_clock.advance(30_000)
            ticks = await _get(url, "/v1/trades/ticks", market="KRW-BTC", count=200)
            newest = str(ticks[0]["sequential_id"])
            # ccxt keeps receiving into its trade cache between watch calls; poll that cache
            # (a watch call would wait for a message newer than the whole batch).
            cache = exchange.trades["BTC/KRW"]
            async with asyncio.timeout(10):
                while cache[-1]["id"] != newest:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            trades = list(cache)
            book = await exchange.watch_order_book("BTC/KRW")
            (rest_book,) = await _get(url, "/v1/orderbook", markets="KRW-BTC")
        finally:
            await exchange.close()
    rest_ids = [str(t["sequential_id"]) for t in reversed(ticks)]
    assert ticker["symbol"] == "BTC/KRW" and ticker["last"] > 0
    ids = [t["id"] for t in trades]
    assert len(ids) > 5
    assert ids == rest_ids[rest_ids.index(ids[0]) :]  # every trade, in order, none twice
    best = rest_book["orderbook_units"][0]
    assert book["bids"][0] == [best["bid_price"], best["bid_size"]]
    assert book["asks"][0] == [best["ask_price"], best["ask_size"]]


async def _get(url: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=url) as rest:
        response = await rest.get(path, params=params)
    assert response.status_code == 200, response.text
    return json.loads(response.content)
