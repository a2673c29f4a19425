"""Warmup: every configured exchange fetched once per URL, failures reported per exchange,
the catalog kept across restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from clitools import closed_port

from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig


def market_calls(url: str) -> int:
    stats = httpx.get(url + "/sim/stats").json()
    return int(stats["requests"]["by_group"].get("market", 0))


async def test_regions_fetched_once_each_and_failures_isolated(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    with running_sim(SimConfig(region="kr")) as kr, running_sim(SimConfig(region="sg")) as sg:
        exchanges = {
            "upbit-kr": kr,
            "upbit-kr-again": kr + "/",  # the same source under another name: fetched once
            "upbit-sg": sg,
            "broken": sg + "/nowhere",  # answers Upbit's unrouted-path 404
            "down": closed_port(),
        }
        async with Spine(
            kr, tmp_path / "db.sqlite", exchanges=exchanges, warmup_every_s=0
        ) as spine:
            report = await spine.warmup()
        assert report["success"] is False
        assert report["refreshed_exchanges"] == ["upbit-kr", "upbit-kr-again", "upbit-sg"]
        details = report["exchange_details"]
        assert details["broken"]["success"] is False and "404" in details["broken"]["error"]
        # Each part once (the circuit's own words used to follow again as "caused by").
        down = details["down"]["error"]
        assert down.count("connection refused") == down.count("is open after") == 1, down
        kr_count = details["upbit-kr"]["markets"]
        assert details["upbit-kr"]["instruments"] == kr_count == 27  # 30, 3 delisted
        # kr under two names counts once: distinct markets per upstream
        assert report["total_markets"] == kr_count + details["upbit-sg"]["markets"]
        assert market_calls(kr) == 1 and market_calls(sg) == 1
        assert isinstance(report["execution_time"], float)

        # A restart answers markets() from the stored catalog without asking upstream.
        async with Spine(kr, tmp_path / "db.sqlite", warmup_every_s=0) as spine:
            markets = await spine.markets()
        assert len(markets) == kr_count and market_calls(kr) == 1
        names = {m.market for m in markets}
        assert "KRW-BTC" in names


@pytest.mark.process
def test_warmup_command_json(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    with running_sim(SimConfig(region="kr")) as kr, running_sim(SimConfig(region="id")) as id_:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "marketspine",
                "warmup",
                "--upstream",
                kr,
                "--exchange",
                f"upbit-id={id_}",
                "--db",
                str(tmp_path / "w.db"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["success"] is True
    assert set(report["refreshed_exchanges"]) == {"upbit", "upbit-id"}
    assert report["exchange_details"]["upbit-id"]["markets"] > 0


class HandSleep:
    """The warmup schedule's sleep, driven by hand: records what was asked and returns
    only when the test says so."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._asked = asyncio.Condition()
        self._go = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        async with self._asked:
            self.asked.append(seconds)
            self._asked.notify_all()
        self._go.clear()
        await self._go.wait()

    async def sleeping(self, times: int) -> None:
        """Return once the schedule has gone to sleep ``times`` times."""
        async with asyncio.timeout(5), self._asked:
            await self._asked.wait_for(lambda: len(self.asked) >= times)

    def wake(self) -> None:
        self._go.set()


async def test_configured_warmup_runs_at_start_up_then_every_six_hours(
    sim_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = HandSleep()
    exchanges = {"upbit": "http://sim", "upbit-again": "http://sim/", "broken": "http://sim/x"}
    async with Spine(
        "http://sim",
        tmp_path / "w.db",
        transport=httpx.ASGITransport(app=sim_app),
        exchanges=exchanges,
        sleep=sleep,
    ) as spine:
        never_warmed = spine.tick_size("KRW-BTC", 5.0)  # the table's tick at price 5
        # Nobody calls warmup(): it ran at start-up, then the schedule sleeps six hours.
        await sleep.sleeping(1)
        assert sleep.asked == [6 * 3600]
        assert spine.client.statistics().sent["market"] == 1  # one URL under two names
        sleep.wake()  # six hours pass
        await sleep.sleeping(2)
        assert spine.client.statistics().sent["market"] == 2
        # The warmed instrument answers in the band of today's price, the table elsewhere.
        instruments = await spine.client.instruments(["KRW-BTC"])
        price = (await spine.ticker("KRW-BTC", max_age_s=0)).price
        assert spine.tick_size("KRW-BTC", price) == instruments[0].tick_size
        assert spine.tick_size("KRW-BTC", 5.0) == never_warmed == 0.01
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2 and all("broken" in r.getMessage() for r in failures)
    assert "404" in failures[0].getMessage()  # the cause is in the log line


class OddTick(httpx.AsyncBaseTransport):
    """The simulator, except that its instruments give KRW-BTC a tick of 250, which Upbit's
    table does not know (as an exchange rule newer than the table would)."""

    def __init__(self, app: Any) -> None:
        self._sim = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._sim.handle_async_request(request)
        if request.url.path != "/v1/orderbook/instruments":
            return response
        rows = json.loads(await response.aread())
        for row in rows:
            if row["market"] == "KRW-BTC":
                row["tick_size"] = "250"
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, json=rows)


async def test_tick_size_uses_the_warmed_instrument_in_its_price_band(
    sim_app: Any, tmp_path: Path
) -> None:
    async with Spine(
        "http://sim", tmp_path / "t.db", transport=OddTick(sim_app), warmup_every_s=0
    ) as spine:
        price = (await spine.ticker("KRW-BTC", max_age_s=0)).price
        assert spine.tick_size("KRW-BTC", price) == 1000  # never warmed: the table
        await spine.warmup()
        assert spine.tick_size("KRW-BTC", price) == 250  # the instrument, not the table
        assert spine.tick_size("KRW-BTC", price * 1.05) == 250  # same band
        assert spine.tick_size("KRW-BTC", 5.0) == 0.01  # another band: the table at 5
        assert spine.tick_size("KRW-ETH", 5.0) == 0.01  # a regular tick, placed by the table
    # After a restart the catalog has no prices: an unknown tick holds at every price, a
    # known one is placed by the table.
    async with Spine(
        "http://sim", tmp_path / "t.db", transport=OddTick(sim_app), warmup_every_s=0
    ) as spine:
        assert spine.tick_size("KRW-BTC", 5.0) == 250
        assert spine.tick_size("KRW-ETH", 5.0) == 0.01
