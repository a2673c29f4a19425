"""The real ``marketspine serve`` process: a client subscribing to the trades of markets
serve does not stream yet gets each market's SNAPSHOT, then every trade of the simulator's
history after it, in order, once (serve answers the snapshot from REST while its upstream
subscription comes up). Once with a fast simulator on its own running clock, the race left
to chance; once with the simulator's requests held (``SimGate``) until the market traded."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import ManualClock, SimGate, afternoon_clock, run_sim
from serve_support import TOKEN, ServeProcess, serve_process
from websockets.asyncio.client import connect as ws_connect

from marketspine.sim import SimConfig, create_app

pytestmark = [pytest.mark.timeout(90), pytest.mark.process]

MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
SPEED = 60.0  # simulated seconds per real second: BTC trades about 40 times a second
ENOUGH = 15  # REALTIME trades per market to compare
WAIT_S = 30.0


@pytest.fixture(scope="module")
def fast_sim() -> Iterator[str]:
    with run_sim(SimConfig(rate_limit=0, speed=SPEED), afternoon_clock(SPEED)) as url:
        yield url


@pytest.fixture(scope="module")
def served(fast_sim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    db = tmp_path_factory.mktemp("serve-ws-gapless") / "serve.db"
    with serve_process(fast_sim, db, "--admin-token", TOKEN) as process:
        yield process


async def newest(sim: str, market: str) -> int:
    async with httpx.AsyncClient(base_url=sim, timeout=10) as rest:
        response = await rest.get("/v1/trades/ticks", params={"market": market, "count": 1})
    seq: int = response.json()[0]["sequential_id"]
    return seq


async def history_between(sim: str, market: str, first: int, last: int) -> list[int]:
    """Sequential ids of ``market``'s trades after ``first`` up to ``last``, oldest first."""
    newest_first = [last]
    async with httpx.AsyncClient(base_url=sim, timeout=10) as rest:
        while True:
            params: dict[str, str | int] = {
                "market": market,
                "count": 500,
                "cursor": newest_first[-1],
            }
            page = (await rest.get("/v1/trades/ticks", params=params)).json()
            assert page, f"{market}: the history ended before the snapshot's trade"
            for row in page:
                if row["sequential_id"] == first:
                    return newest_first[::-1]
                newest_first.append(row["sequential_id"])


async def test_every_trade_after_the_snapshot_arrives_once_in_order(
    served: ServeProcess, fast_sim: str
) -> None:
    snapshots: dict[str, int] = {}
    realtime: dict[str, list[int]] = defaultdict(list)
    url = served.url.replace("http://", "ws://") + "/websocket/v1"
    async with ws_connect(url, max_queue=None) as ws:
        await ws.send(json.dumps([{"ticket": "gapless"}, {"type": "trade", "codes": MARKETS}]))
        async with asyncio.timeout(WAIT_S):
            while any(len(realtime[m]) < ENOUGH for m in MARKETS):
                frame: dict[str, Any] = json.loads(await ws.recv())
                market, seq = frame["code"], frame["sequential_id"]
                if frame["stream_type"] == "SNAPSHOT":
                    assert market not in snapshots and not realtime[market]
                    snapshots[market] = seq
                else:
                    assert market in snapshots, f"{market}: REALTIME before its SNAPSHOT"
                    realtime[market].append(seq)
    for market in MARKETS:
        want = await history_between(fast_sim, market, snapshots[market], realtime[market][-1])
        assert realtime[market] == want, market


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def gate() -> SimGate:
    return SimGate()


@pytest.fixture(scope="module")
def gated_sim(gate: SimGate, clock: ManualClock) -> Iterator[str]:
    with run_sim(app=gate.wrap(create_app(SimConfig(rate_limit=0), clock=clock))) as url:
        yield url


@pytest.fixture(scope="module")
def served_gated(
    gated_sim: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    db = tmp_path_factory.mktemp("serve-ws-gated") / "serve.db"
    with serve_process(gated_sim, db, "--admin-token", TOKEN) as process:
        yield process


async def test_trades_before_the_upstream_subscription_is_live_arrive(
    served_gated: ServeProcess, gated_sim: str, gate: SimGate, clock: ManualClock
) -> None:
    """The race as it goes when serve's upstream subscription is slow: the snapshot comes
    from REST, the market trades, and only then does upstream answer."""
    market = "KRW-BTC"
    url = served_gated.url.replace("http://", "ws://") + "/websocket/v1"
    gate.requests.clear()
    async with ws_connect(url, max_queue=None) as ws:
        await ws.send(json.dumps([{"ticket": "gated"}, {"type": "trade", "codes": [market]}]))
        snapshot = json.loads(await ws.recv())
        assert snapshot["stream_type"] == "SNAPSHOT"
        clock.advance(60_000)
        gate.requests.set()
        clock.advance(30_000)
        last = await newest(gated_sim, market)
        got: list[int] = []
        async with asyncio.timeout(WAIT_S):
            while not got or got[-1] != last:
                frame = json.loads(await ws.recv())
                assert frame["stream_type"] == "REALTIME"
                got.append(frame["sequential_id"])
    want = await history_between(gated_sim, market, snapshot["sequential_id"], last)
    assert len(want) >= 40  # the 90 s hold a hole of dozens of trades
    assert got == want
    # The operator sees the join: one walk, and the trades it filled before the stream's.
    async with httpx.AsyncClient(base_url=served_gated.url, timeout=10) as http:
        metrics = (await http.get("/metrics")).text
    joins = re.search(r"\nmarketspine_websocket_snapshot_joins_total (\S+)\n", metrics)
    filled = re.search(r"\nmarketspine_websocket_snapshot_join_trades_total (\S+)\n", metrics)
    assert joins is not None and float(joins.group(1)) == 1
    assert filled is not None and 0 < float(filled.group(1)) <= len(want)
    incomplete = re.search(
        r"\nmarketspine_websocket_snapshot_joins_incomplete_total (\S+)\n", metrics
    )
    assert incomplete is not None and float(incomplete.group(1)) == 0
    # And the admin page shows the same figures.
    async with httpx.AsyncClient(base_url=served_gated.url, timeout=10) as http:
        assert (await http.post("/admin/login", data={"token": TOKEN})).status_code == 303
        websocket = (await http.get("/admin/api/state")).json()["websocket"]
    assert websocket["snapshot_joins"] == 1
    assert websocket["snapshot_join_trades"] == float(filled.group(1))
    assert websocket["snapshot_joins_incomplete"] == 0
