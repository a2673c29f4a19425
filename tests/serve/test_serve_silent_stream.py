"""Field notes, "requests hang until the first WebSocket push": clients of a caching proxy
timed out at start-up while it waited for the exchange's stream. serve watching a market
whose upstream stream falls silent at once (after the first snapshots: no frame, no pong)
answers every ticker and book within the bound: from REST before the stream brought
anything, from what each new socket brought while it is proven live, never waiting for the
stream (serve in-process, a loopback simulator whose sockets stall)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from helpers import wait_until
from serve_support import service_client, sim_stats

from marketspine._serve.service import ServeService
from marketspine.sim import SimConfig

POLLS = 6
BOUND_S = 2.0  # a REST round trip on loopback, with room for a loaded machine


async def test_a_silent_upstream_stream_never_holds_up_an_answer(
    running_sim: Callable[..., contextlib.AbstractContextManager[str]], tmp_path: Path
) -> None:
    with running_sim(SimConfig(rate_limit=0)) as url:
        # Every socket stalls on its first tick: subscribed, then silent, pongs included.
        async with httpx.AsyncClient(base_url=url) as sim:
            stall = await sim.post("/sim/faults", json={"ws_stall_every_s": 0.001})
            stall.raise_for_status()
        async with (
            ServeService(url, tmp_path / "s.db", admin_token="t", warmup_every_s=0) as service,
            service_client(service) as http,
        ):
            took: list[float] = []
            sources: list[str] = []
            for n in range(POLLS):
                for path, params in (
                    ("/v1/ticker", {"markets": "KRW-BTC"}),
                    ("/v1/orderbook", {"markets": "KRW-BTC"}),
                ):
                    started = time.perf_counter()
                    answer = await http.get(path, params=params)
                    took.append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.text
                    assert answer.json()[0]["market"] == "KRW-BTC"
                    sources.append(answer.headers["X-Marketspine-Source"])
                if n == 0:  # the market is watched now: wait for its socket to fall silent
                    await wait_until(
                        lambda: sim_stats(url)["websocket"]["stalls"] >= 1,
                        30,
                        "the upstream socket to stall",
                    )
                await asyncio.sleep(0.2)
    assert max(took) < BOUND_S, took
    # The first, before any push: from REST at once, not after waiting for the stream.
    assert sources[0] == "upstream", sources
