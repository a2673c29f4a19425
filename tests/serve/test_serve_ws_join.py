"""A trade snapshot answered from REST joins the live stream without a hole or a repeat:
after its SNAPSHOT a ``/websocket/v1`` client gets every trade of the simulator's history,
in order, each once, as on Upbit.

``WsGateway`` runs in a tiny Starlette app in front of a loopback simulator on a hand-driven
clock. The simulator's WebSocket traffic passes a ``SimGate`` that can hold the gateway's
subscription requests (its upstream subscription is not live yet when the snapshot comes
from REST) or the frames the simulator sends (the live stream lags the REST snapshot), so
each race is played out the same way every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ManualClock, SimGate, run_sim, wait_until
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from marketspine import Spine
from marketspine._live.trade_join import JOIN_HOLD_MAX
from marketspine._serve.upbit_ws import WsGateway
from marketspine.sim import SimConfig, create_app

pytestmark = pytest.mark.timeout(60)

BTC = "KRW-BTC"
WAIT_S = 15.0


@pytest.fixture
def gate() -> SimGate:
    return SimGate()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def upstream(gate: SimGate, clock: ManualClock) -> Iterator[str]:
    with run_sim(app=gate.wrap(create_app(SimConfig(rate_limit=0), clock=clock))) as url:
        yield url


@pytest.fixture
def hold_max() -> int:
    return JOIN_HOLD_MAX


@pytest.fixture
def gateway(upstream: str, tmp_path: Path, hold_max: int) -> Iterator[tuple[str, Starlette]]:
    """``WsGateway`` over a Spine on ``upstream``; its ws:// URL and app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Spine(upstream, db=tmp_path / "serve.db") as spine:
            app.state.gateway = WsGateway(spine, join_hold_max=hold_max)
            try:
                yield
            finally:
                await app.state.gateway.aclose()

    async def endpoint(websocket: Any) -> None:
        await app.state.gateway.handle(websocket)

    app = Starlette(routes=[WebSocketRoute("/websocket/v1", endpoint)], lifespan=lifespan)
    with run_sim(app=app) as url:
        yield url.replace("http://", "ws://") + "/websocket/v1", app


def subscribe(kind: str, market: str) -> str:
    return json.dumps([{"ticket": "join"}, {"type": kind, "codes": [market]}])


async def frames_until(ws: ClientConnection, done: Callable[[list[Any]], bool]) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(WAIT_S):
        while not done(got):
            got.append(json.loads(await ws.recv()))
    return got


def trades(frames: list[Any]) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("type") == "trade"]


def reached(seq: int) -> Callable[[list[Any]], bool]:
    return lambda frames: any(t["sequential_id"] == seq for t in trades(frames))


async def history_after(upstream: str, first: int, last: int) -> list[dict[str, Any]]:
    """The simulator's trades after ``first`` up to ``last`` (sequential ids), oldest first,
    paged back from ``last`` with ``cursor``."""
    newest_first: list[dict[str, Any]] = []
    params: dict[str, Any] = {"market": BTC, "count": 500}
    async with httpx.AsyncClient(base_url=upstream) as rest:
        response = await rest.get("/v1/trades/ticks", params={**params, "count": 1})
        (row,) = response.json()
        assert row["sequential_id"] == last, "the simulator traded after the last trade"
        newest_first.append(row)
        while True:
            cursor = newest_first[-1]["sequential_id"]
            page = (await rest.get("/v1/trades/ticks", params={**params, "cursor": cursor})).json()
            assert page, "the history ended before the snapshot's trade"
            for row in page:
                if row["sequential_id"] == first:
                    return newest_first[::-1]
                newest_first.append(row)


async def newest_seq(upstream: str) -> int:
    async with httpx.AsyncClient(base_url=upstream) as rest:
        response = await rest.get("/v1/trades/ticks", params={"market": BTC, "count": 1})
    seq: int = response.json()[0]["sequential_id"]
    return seq


async def assert_gapless(ws: ClientConnection, snapshot: dict[str, Any], upstream: str) -> int:
    """Reads ``ws`` up to the simulator's newest trade and checks that every trade of its
    history after ``snapshot`` arrived, as REALTIME, in order, once. Returns how many."""
    newest = await newest_seq(upstream)
    got = trades(await frames_until(ws, reached(newest)))
    want = await history_after(upstream, snapshot["sequential_id"], newest)
    assert [(t["sequential_id"], t["stream_type"]) for t in got] == [
        (t["sequential_id"], "REALTIME") for t in want
    ]
    for sent, row in zip(got, want, strict=True):
        assert (sent["trade_timestamp"], sent["trade_price"], sent["trade_volume"]) == (
            row["timestamp"],
            row["trade_price"],
            row["trade_volume"],
        )
    return len(got)


async def test_trades_before_the_upstream_subscription_is_live_are_delivered(
    gateway: tuple[str, Starlette], upstream: str, gate: SimGate, clock: ManualClock
) -> None:
    url, app = gateway
    gate.requests.clear()  # the gateway's upstream subscription is not live yet
    async with ws_connect(url, max_queue=None) as ws:
        await ws.send(subscribe("trade", BTC))
        (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
        assert snapshot["stream_type"] == "SNAPSHOT"
        clock.advance(60_000)  # these trades happen before upstream answers
        between = await history_after(
            upstream, snapshot["sequential_id"], await newest_seq(upstream)
        )
        assert len(between) >= 3, "no hole to fill: the market did not trade"
        gate.requests.set()
        clock.advance(30_000)
        delivered = await assert_gapless(ws, snapshot, upstream)
    assert delivered > len(between)
    assert app.state.gateway.statistics().snapshot_joins == 1


async def test_live_trades_older_than_the_rest_snapshot_are_not_sent(
    gateway: tuple[str, Starlette], upstream: str, gate: SimGate, clock: ManualClock
) -> None:
    """The market's trades are streamed already (for another client's candles) but lag the
    REST snapshot: those the snapshot covers are not sent after it."""
    url, app = gateway
    gate.frames.clear()  # the simulator's frames wait: the live stream lags
    async with ws_connect(url, max_queue=None) as candles:
        await candles.send(subscribe("candle.1s", BTC))
        await frames_until(candles, lambda f: len(f) >= 1)  # from REST
        # Upstream answered the trade subscription the candles follow (its SNAPSHOT waits).
        await wait_until(lambda: gate.held >= 1, WAIT_S, "the upstream trade snapshot")
        clock.advance(60_000)
        async with ws_connect(url, max_queue=None) as ws:
            await ws.send(subscribe("trade", BTC))
            (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
            assert snapshot["stream_type"] == "SNAPSHOT"
            assert snapshot["sequential_id"] == await newest_seq(upstream)
            gate.frames.set()
            clock.advance(30_000)
            assert await assert_gapless(ws, snapshot, upstream) >= 3
    # The stream met the snapshot's own trade: no REST walk was needed.
    assert app.state.gateway.statistics().snapshot_joins == 0


@pytest.mark.parametrize("hold_max", [3])
async def test_a_walk_that_hangs_holds_no_more_than_the_cap_then_the_hole_is_counted(
    gateway: tuple[str, Starlette], upstream: str, gate: SimGate, clock: ManualClock
) -> None:
    """REST hangs while the snapshot is joined: once more live trades came than a join may
    hold, they are sent (the hole before them left open, logged and counted), not queued
    until REST answers; the walk's late answer adds nothing."""
    url, app = gateway
    gate.requests.clear()  # the gateway's upstream subscription is not live yet
    async with ws_connect(url, max_queue=None) as ws:
        await ws.send(subscribe("trade", BTC))
        (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
        clock.advance(60_000)  # a hole the walk would fill
        # The stream will start at the newest of these: the rest are the hole.
        *hole, first = await history_after(
            upstream, snapshot["sequential_id"], await newest_seq(upstream)
        )
        assert hole, "no hole: the market did not trade"
        gate.rest.clear()  # the walk's REST call hangs
        gate.requests.set()
        await wait_until(lambda: gate.held_rest >= 1, WAIT_S, "the walk's REST call")
        clock.advance(120_000)  # more live trades than the join may hold
        held = trades(await frames_until(ws, lambda f: len(trades(f)) > 3))
        stats = app.state.gateway.statistics()
        assert (stats.snapshot_joins, stats.snapshot_joins_incomplete) == (1, 1)
        gate.rest.set()
        clock.advance(30_000)
        newest = await newest_seq(upstream)
        got = held + trades(await frames_until(ws, reached(newest)))
    # Every trade from the first live one on, in order, once; none of the hole.
    want = [first, *await history_after(upstream, first["sequential_id"], newest)]
    assert [t["sequential_id"] for t in got] == [t["sequential_id"] for t in want]
    assert app.state.gateway.statistics().snapshot_join_trades == 0
