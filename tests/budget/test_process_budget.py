"""Every Client and Spine of a program without a budget of its own shares one per upstream:
Upbit limits the IP, so two Spines in one process (a notebook's cells, one per strategy)
stay under the ceiling together (the simulator in-process, its limit on)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
from helpers import FakeTime, sim_app_stats

from marketspine import Client
from marketspine._budget.process import process_budget
from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig, create_app


def test_one_budget_per_upstream_origin_and_thread() -> None:
    first = process_budget("https://api.upbit.com")
    assert process_budget("https://api.upbit.com/") is first
    assert process_budget("https://API.upbit.com:443") is first
    assert process_budget("https://sg-api.upbit.com") is not first
    assert process_budget("http://127.0.0.1:8765") is not process_budget("http://127.0.0.1:8766")
    elsewhere: list[object] = []
    thread = threading.Thread(
        target=lambda: elsewhere.append(process_budget("https://api.upbit.com"))
    )
    thread.start()
    thread.join()
    assert elsewhere[0] is not first  # another thread runs another event loop


async def test_clients_without_a_budget_share_the_process_one() -> None:
    app = create_app(SimConfig(rate_limit=0))
    transport = httpx.ASGITransport(app=app)
    async with (
        Client("http://sim", transport=transport) as one,
        Client("http://sim", transport=transport) as two,
    ):
        await one.candles("KRW-BTC", "1m", count=1)
        await two.candles("KRW-BTC", "1m", count=1)
        assert one.statistics().budget.groups["candles"].sent == 2  # both sends, one budget
    time = FakeTime()
    async with Client("http://sim", transport=transport, clock=time.clock, sleep=time.sleep) as own:
        await own.candles("KRW-BTC", "1m", count=1)
        assert own.statistics().budget.groups["candles"].sent == 1  # on its own time


async def test_two_spines_in_one_process_stay_under_the_ceiling_together(tmp_path: Path) -> None:
    app = create_app(SimConfig(seed=1))  # Upbit's limit: 10 a second per group

    async def read(i: int, market: str) -> int:
        async with Spine(
            "http://sim", tmp_path / f"{i}.db", transport=httpx.ASGITransport(app=app)
        ) as spine:
            # A dense market's cold 2,000 candles: ten pages sent at once.
            result = await spine.candles(market, "1m", count=2000, end="2026-06-01")
            return len(result)

    assert list(await asyncio.gather(read(0, "KRW-BTC"), read(1, "KRW-ETH"))) == [2000, 2000]
    stats = await sim_app_stats(app)
    assert stats["requests"]["by_group"]["candles"] >= 20
    assert (stats["429"], stats["418"]) == (0, 0), stats["status"]


def test_a_spine_made_in_one_thread_uses_the_budget_of_the_thread_it_runs_in(
    tmp_path: Path,
) -> None:
    # A budget is one event loop's state: two threads, each running its own loop, must not
    # share one, whatever thread made the Spines.
    app = create_app(SimConfig(rate_limit=0))
    spines = [
        Spine("http://sim", tmp_path / f"{i}.db", transport=httpx.ASGITransport(app=app))
        for i in range(2)
    ]
    sent: dict[int, int] = {}

    def run(i: int) -> None:
        async def read() -> None:
            async with spines[i] as spine:
                await spine.candles("KRW-BTC", "1m", count=400, end="2026-06-01")
                sent[i] = spine.client.statistics().budget.groups["candles"].sent

        asyncio.run(read())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sent == {0: 2, 1: 2}  # each thread's budget counts its own two pages only
    main = process_budget("http://sim").statistics().groups
    assert "candles" not in main or main["candles"].sent == 0  # the making thread's: unused
