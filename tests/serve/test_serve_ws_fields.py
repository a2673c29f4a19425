"""The wire fields only Upbit's WebSocket sends reach serve's ``/websocket/v1`` clients as
upstream sent them: a ticker's ``ask_bid``, ``acc_ask_volume``/``acc_bid_volume`` and
``market_state``, a trade's ``best_*``. The real ``marketspine serve`` process and a direct
connection to the simulator behind it, on a hand-driven clock, see the same events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from helpers import ManualClock, run_sim
from serve_support import TOKEN, ServeProcess, serve_process
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from marketspine.sim import SimConfig

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

BTC = "KRW-BTC"
WAIT_S = 20.0
# DEFAULT key -> SIMPLE key of the fields compared by name below.
SHORT = {
    "type": "ty",
    "stream_type": "st",
    "sequential_id": "sid",
    "trade_timestamp": "ttms",
    "timestamp": "tms",
    "ask_bid": "ab",
    "acc_trade_volume": "atv",
    "acc_ask_volume": "aav",
    "acc_bid_volume": "abv",
    "market_state": "ms",
    "best_ask_price": "bap",
    "best_ask_size": "bas",
    "best_bid_price": "bbp",
    "best_bid_size": "bbs",
}


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    """The simulator's clock (the simulator runs in this process, serve in another)."""
    return ManualClock()


@pytest.fixture(scope="module")
def sim(clock: ManualClock) -> Iterator[str]:
    with run_sim(SimConfig(rate_limit=0), clock=clock) as url:
        yield url


@pytest.fixture(scope="module")
def served(sim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    db = tmp_path_factory.mktemp("serve-ws-fields") / "serve.db"
    with serve_process(sim, db, "--admin-token", TOKEN) as process:
        yield process


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/websocket/v1"


async def frames_until(ws: ClientConnection, done: Callable[[list[Any]], bool]) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(WAIT_S):
        while not done(got):
            got.append(json.loads(await ws.recv()))
    return got


async def newest_trade(sim: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sim) as rest:
        response = await rest.get("/v1/trades/ticks", params={"market": BTC, "count": 1})
    assert response.status_code == 200, response.text
    row: dict[str, Any] = json.loads(response.content)[0]
    return row


@pytest.mark.parametrize("fmt", ["DEFAULT", "SIMPLE"])
async def test_ws_only_fields_are_the_simulators_own(
    served: ServeProcess, sim: str, clock: ManualClock, fmt: str
) -> None:
    key = (lambda name: SHORT[name]) if fmt == "SIMPLE" else (lambda name: name)

    def of(frames: list[Any], kind: str, stream_type: str) -> list[dict[str, Any]]:
        return [
            f for f in frames if f[key("type")] == kind and f[key("stream_type")] == stream_type
        ]

    def snapshots(frames: list[Any]) -> bool:
        return bool(of(frames, "ticker", "SNAPSHOT")) and bool(of(frames, "trade", "SNAPSHOT"))

    def reached(trade: dict[str, Any]) -> Callable[[list[Any]], bool]:
        """Both the newest trade and the ticker after it have arrived."""
        return lambda frames: (
            any(
                t[key("sequential_id")] == trade["sequential_id"]
                for t in of(frames, "trade", "REALTIME")
            )
            and any(
                t[key("trade_timestamp")] == trade["timestamp"]
                for t in of(frames, "ticker", "REALTIME")
            )
        )

    message = json.dumps(
        [
            {"ticket": "fields"},
            {"type": "ticker", "codes": [BTC]},
            {"type": "trade", "codes": [BTC]},
            {"format": fmt},
        ]
    )
    async with (
        ws_connect(ws_url(sim), max_queue=None) as direct,
        ws_connect(ws_url(served.url), max_queue=None) as through,
    ):
        await direct.send(message)
        await through.send(message)
        await frames_until(direct, snapshots)
        await frames_until(through, snapshots)
        # Serve may answer the snapshots from REST before its own upstream subscription is
        # live: once the trade and ticker after a first move arrived, it is.
        clock.advance(30_000)
        first = await newest_trade(sim)
        await frames_until(direct, reached(first))
        await frames_until(through, reached(first))
        clock.advance(30_000)  # both connections see these trades in one step
        newest = await newest_trade(sim)
        want = await frames_until(direct, reached(newest))
        got = await frames_until(through, reached(newest))

    direct_trades = {t[key("sequential_id")]: t for t in of(want, "trade", "REALTIME")}
    served_trades = of(got, "trade", "REALTIME")
    assert served_trades and len(served_trades) == len(direct_trades)
    for trade in served_trades:
        expected = direct_trades[trade[key("sequential_id")]]
        # Only the frame's send time differs: serve stamps a trade with its trade time.
        assert {k: v for k, v in trade.items() if k != key("timestamp")} == {
            k: v for k, v in expected.items() if k != key("timestamp")
        }
        for name in ("best_ask_price", "best_ask_size", "best_bid_price", "best_bid_size"):
            assert isinstance(trade[key(name)], int | float), name
        assert trade[key("best_bid_price")] < trade[key("best_ask_price")]

    (ticker,) = [
        t for t in of(got, "ticker", "REALTIME") if t[key("trade_timestamp")] == newest["timestamp"]
    ]
    (expected_ticker,) = [
        t
        for t in of(want, "ticker", "REALTIME")
        if t[key("trade_timestamp")] == newest["timestamp"]
    ]
    assert ticker == expected_ticker
    assert ticker[key("ask_bid")] == newest["ask_bid"]
    assert ticker[key("market_state")] == "ACTIVE"
    ask, bid = ticker[key("acc_ask_volume")], ticker[key("acc_bid_volume")]
    assert isinstance(ask, float) and isinstance(bid, float)
    assert ask + bid == pytest.approx(ticker[key("acc_trade_volume")])
