"""Upbit's WebSocket protocol edges and serve's own limits, through the real ``marketspine
serve`` process: unknown and lower-case codes are ignored as Upbit ignores them, an
orderbook depth suffix outside 1/5/15/30 means 30 units, a ``level`` the market does not
support streams nothing, and connections over ``--ws-max-per-ip`` are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from serve_support import TOKEN, ServeProcess
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

BTC, ETH = "KRW-BTC", "KRW-ETH"
WAIT_S = 20.0


def ws_url(served: ServeProcess) -> str:
    return served.url.replace("http://", "ws://") + "/websocket/v1"


def connect(served: ServeProcess) -> ws_connect:
    return ws_connect(ws_url(served), max_queue=None)


async def frames_until(ws: ClientConnection, done: Callable[[list[Any]], bool]) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(WAIT_S):
        while not done(got):
            got.append(json.loads(await ws.recv()))
    return got


async def list_subscriptions(ws: ClientConnection) -> list[Any]:
    """What the connection is subscribed to; every frame before the answer comes back too."""
    await ws.send(json.dumps([{"ticket": "l"}, {"method": "LIST_SUBSCRIPTIONS"}]))
    return await frames_until(ws, lambda f: bool(f) and f[-1].get("method") == "LIST_SUBSCRIPTIONS")


def books(frames: list[Any], code: str) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("type") == "orderbook" and f.get("code") == code]


async def test_unknown_codes_are_ignored_and_any_other_depth_means_30(serve: ServeProcess) -> None:
    async with connect(serve) as ws:
        await ws.send(
            json.dumps(
                [
                    {"ticket": "t"},
                    {"type": "orderbook", "codes": [f"{BTC}.7", f"{ETH}.5", "KRW-NOPE", "krw-xrp"]},
                    {"type": "ticker", "codes": ["KRW-NOPE"]},
                ]
            )
        )
        frames = await frames_until(ws, lambda f: bool(books(f, BTC)) and bool(books(f, ETH)))
        frames += await list_subscriptions(ws)  # the socket stays open: no error, no close
    assert len(books(frames, BTC)[0]["orderbook_units"]) == 30
    assert len(books(frames, ETH)[0]["orderbook_units"]) == 5
    assert {f["code"] for f in frames if "code" in f} == {BTC, ETH}
    assert not [f for f in frames if "error" in f]
    assert frames[-1]["result"] == [
        {"type": "orderbook", "codes": [f"{BTC}.7", f"{ETH}.5"], "level": 0}
    ]


async def test_an_unsupported_orderbook_level_streams_nothing(serve: ServeProcess) -> None:
    async with connect(serve) as ws:
        # KRW-BTC's tick is 1,000 KRW: levels 10,000, 100,000 and 1,000,000 exist, 7 does not.
        await ws.send(
            json.dumps([{"ticket": "t"}, {"type": "orderbook", "codes": [BTC], "level": 7}])
        )
        nothing = await list_subscriptions(ws)
        await ws.send(
            json.dumps([{"ticket": "t"}, {"type": "orderbook", "codes": [BTC], "level": 10000}])
        )
        grouped = await frames_until(ws, lambda f: bool(books(f, BTC)))
    assert nothing == [{"method": "LIST_SUBSCRIPTIONS", "result": [], "ticket": "l"}]
    assert books(grouped, BTC)[0]["level"] == 10000


async def test_connections_over_ws_max_per_ip_are_refused(
    start_serve: Callable[..., AbstractContextManager[ServeProcess]],
    fixed_sim: str,
    tmp_path: Path,
) -> None:
    served_with = start_serve(
        fixed_sim, tmp_path / "s.db", "--admin-token", TOKEN, "--ws-max-per-ip", "1"
    )
    with served_with as served:
        async with connect(served) as inside:
            async with connect(served) as over:
                async with asyncio.timeout(WAIT_S):
                    error = json.loads(await over.recv())
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(WAIT_S):
                        await over.recv()
            await inside.send("PING")
            async with asyncio.timeout(WAIT_S):
                reply = await inside.recv()
            assert json.loads(reply) == {"status": "UP"}
        metrics = served.get("/metrics").text
    assert error["error"]["name"] == "TOO_MANY_CONNECTIONS"
    assert over.close_code == 1008 and "at most 1" in (over.close_reason or "")
    assert "marketspine_websocket_refused_clients_total 1.0" in metrics
