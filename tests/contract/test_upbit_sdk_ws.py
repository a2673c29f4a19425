"""Contract: the official ``upbit-sdk`` WebSocket client, pointed at the simulator, subscribes
to ticker and trade and receives messages it parses into its own models."""

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

require_module("upbit", "upbit-sdk is not installed (a dev dependency: pip install -e '.[dev]')")
from upbit import AsyncUpbit  # noqa: E402
from upbit.types.list_subscriptions_response import ListSubscriptionsResponse  # noqa: E402

pytestmark = pytest.mark.timeout(30)

BTC = "KRW-BTC"


async def test_sdk_stream_receives_parsed_ticker_and_trade(
    running_sim: Callable[..., AbstractContextManager[str]], sim_clock: Any
) -> None:
    app = create_app(SimConfig(), clock=sim_clock)
    with running_sim(app=app) as url:
        # No keys, no websocket_base_url: the SDK derives ws://HOST/websocket/v1 from url.
        client = AsyncUpbit(base_url=url)
        try:
            async with client.ws_stream.subscribe(ticker=[BTC], trade=[BTC]) as stream:
                events: list[Any] = []
                async with asyncio.timeout(10):
                    while not {"ticker", "trade"} <= {e.type for e in events}:
                        events.append(await stream.recv())
                    sim_clock.advance(30_000)
                    newest = (await _get(url, "/v1/trades/ticks", market=BTC))[0]
                    while not any(
                        e.type == "trade" and e.sequential_id == newest["sequential_id"]
                        for e in events
                    ):
                        events.append(await stream.recv())
                answer = await stream.list_subscriptions()
        finally:
            await client.close()
    ticker = next(e for e in events if e.type == "ticker")
    trade = next(e for e in events if e.type == "trade")
    assert type(ticker).__name__ == "Ticker" and type(trade).__name__ == "Trade"
    assert ticker.code == BTC and ticker.stream_type == "SNAPSHOT"
    assert trade.code == BTC and trade.stream_type == "SNAPSHOT"
    assert float(ticker.trade_price) > 0
    realtime = [e for e in events if e.stream_type == "REALTIME"]
    assert {e.type for e in realtime} == {"ticker", "trade"}
    assert all(
        isinstance(e.sequential_id, int) and e.sequential_id > 2**53
        for e in events
        if e.type == "trade"
    )
    assert realtime[-1].trade_timestamp == newest["timestamp"]
    assert isinstance(answer, ListSubscriptionsResponse)  # DEFAULT format: full keys
    assert answer.ticket and answer.method == "LIST_SUBSCRIPTIONS"
    assert [row.model_dump() for row in answer.result] == [
        {"type": "ticker", "codes": [BTC]},
        {"type": "trade", "codes": [BTC]},
    ]


async def _get(url: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=url) as rest:
        response = await rest.get(path, params=params)
    assert response.status_code == 200, response.text
    return json.loads(response.content)
