"""Contract: the official upbit-sdk (``websocket_base_url``) and ccxt pro (``urls``
override) stream through the real ``marketspine serve`` process, their flows unchanged,
while the simulator behind it sees one WebSocket connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ManualClock, require_module, run_sim
from serve_support import TOKEN, ServeProcess, serve_process, sim_stats

from marketspine.sim import SimConfig

ccxt_pro = require_module(
    "ccxt.pro", "ccxt is not installed (a dev dependency: pip install -e '.[dev]')"
)
require_module("upbit", "upbit-sdk is not installed (a dev dependency: pip install -e '.[dev]')")
from upbit import AsyncUpbit  # noqa: E402
from upbit.types.list_subscriptions_response import ListSubscriptionsResponse  # noqa: E402

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

BTC = "KRW-BTC"
BTC_PAIR = "BTC/KRW"


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    """The simulator's clock, moved by the tests (the simulator runs in this process)."""
    return ManualClock()


@pytest.fixture(scope="module")
def moving_sim(clock: ManualClock) -> Iterator[str]:
    with run_sim(SimConfig(rate_limit=0), clock=clock) as url:
        yield url


@pytest.fixture(scope="module")
def served(moving_sim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    db = tmp_path_factory.mktemp("serve-ws") / "serve.db"
    with serve_process(moving_sim, db, "--admin-token", TOKEN) as process:
        yield process


def newest_trade(sim: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(
        httpx.get(sim + "/v1/trades/ticks", params={"market": BTC}, timeout=10).content
    )
    return rows[0]


async def test_upbit_sdk_streams_through_serve(
    served: ServeProcess, moving_sim: str, clock: ManualClock
) -> None:
    client = AsyncUpbit(base_url=served.url, websocket_base_url=served.url.replace("http", "ws"))
    try:
        async with client.ws_stream.subscribe(ticker=[BTC], trade=[BTC]) as stream:
            events: list[Any] = []
            async with asyncio.timeout(20):
                while not {"ticker", "trade"} <= {e.type for e in events}:
                    events.append(await stream.recv())
                clock.ms += 30_000
                newest = await asyncio.to_thread(newest_trade, moving_sim)
                while not any(
                    e.type == "trade" and e.sequential_id == newest["sequential_id"] for e in events
                ):
                    events.append(await stream.recv())
            answer = await stream.list_subscriptions()
            metrics = (await asyncio.to_thread(served.get, "/metrics")).text
    finally:
        await client.close()
    ticker = next(e for e in events if e.type == "ticker")
    trade = next(e for e in events if e.type == "trade")
    assert type(ticker).__name__ == "Ticker" and type(trade).__name__ == "Trade"
    assert ticker.code == BTC and ticker.stream_type == "SNAPSHOT"
    assert trade.code == BTC and trade.stream_type == "SNAPSHOT"
    assert float(ticker.trade_price) > 0
    last = next(e for e in reversed(events) if e.type == "trade")
    assert last.stream_type == "REALTIME" and last.trade_timestamp == newest["timestamp"]
    assert all(
        isinstance(e.sequential_id, int) and e.sequential_id > 2**53
        for e in events
        if e.type == "trade"
    )
    assert isinstance(answer, ListSubscriptionsResponse)
    assert [row.model_dump() for row in answer.result] == [
        {"type": "ticker", "codes": [BTC]},
        {"type": "trade", "codes": [BTC]},
    ]
    assert sim_stats(moving_sim)["websocket"]["connections"] == 1
    assert "\nmarketspine_websocket_clients 1.0\n" in metrics
    assert "\nmarketspine_websocket_subscriptions 2.0\n" in metrics
    frames = re.search(r"\nmarketspine_websocket_frames_sent_total (\S+)\n", metrics)
    assert frames is not None and float(frames[1]) >= len(events)


async def test_ccxt_pro_watches_through_serve(
    served: ServeProcess, moving_sim: str, clock: ManualClock
) -> None:
    exchange = ccxt_pro.upbit({"enableRateLimit": False, "timeout": 10_000})
    exchange.urls["api"] = {
        "public": served.url,
        "private": served.url,
        "ws": served.url.replace("http", "ws") + "/websocket/v1",
    }
    try:
        async with asyncio.timeout(30):
            ticker = await exchange.watch_ticker("BTC/KRW")
            book = await exchange.watch_order_book("BTC/KRW")
            await exchange.watch_trades("BTC/KRW")
            clock.ms += 30_000
            newest = await asyncio.to_thread(newest_trade, moving_sim)
            # ccxt resolves a watch with the first message after it and keeps every trade
            # in its cache: read the cache, as a bot would, rather than race the burst.
            newest_id = str(newest["sequential_id"])
            while newest_id not in {t["id"] for t in exchange.trades[BTC_PAIR]}:
                with contextlib.suppress(TimeoutError):  # the next message, or look again
                    await asyncio.wait_for(exchange.watch_trades(BTC_PAIR), 0.2)
    finally:
        await exchange.close()
    assert ticker["symbol"] == "BTC/KRW" and ticker["last"] > 0
    assert book["symbol"] == "BTC/KRW" and book["bids"] and book["asks"]
    assert book["bids"][0][0] < book["asks"][0][0]
    assert sim_stats(moving_sim)["websocket"]["connections"] == 1


SNIPPET = re.compile(r"```python\n# client: ([\w-]+)\n(.*?)```", re.S)
PLACEHOLDER = 'SERVE = "http://127.0.0.1:8600"'


def run_readme_snippet(name: str, url: str) -> dict[str, Any]:
    """Run the README's ``# client: NAME`` block against ``url``; returns its names."""
    readme = Path(__file__).resolve().parents[2] / "README.md"
    code = dict(SNIPPET.findall(readme.read_text()))[name]
    assert PLACEHOLDER in code
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(
        compile(code.replace(PLACEHOLDER, f"SERVE = {url!r}"), f"README:{name}", "exec"), namespace
    )
    return namespace


def test_readme_upbit_sdk_websocket_snippet(served: ServeProcess) -> None:
    events = run_readme_snippet("upbit-sdk-ws", served.url)["events"]
    assert sorted((e.type, e.stream_type) for e in events) == [
        ("ticker", "SNAPSHOT"),
        ("trade", "SNAPSHOT"),
    ]


def test_readme_ccxt_pro_snippet(served: ServeProcess) -> None:
    names = run_readme_snippet("ccxt-pro", served.url)
    ticker, book = names["ticker"], names["book"]
    assert ticker["symbol"] == "BTC/KRW" and ticker["last"] > 0
    assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
