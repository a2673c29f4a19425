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

from marketspine._spine import Spine
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
        }
        async with Spine(
            kr, tmp_path / "db.sqlite", exchanges=exchanges, warmup_every_s=0
        ) as spine:
            report = await spine.warmed()  # configured exchanges are warmed up at start-up
        assert report["success"] is False
        assert report["refreshed_exchanges"] == ["upbit-kr", "upbit-kr-again", "upbit-sg"]
        details = report["exchange_details"]
        assert details["broken"]["success"] is False and "404" in details["broken"]["error"]
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
        self.sleeping = asyncio.Event()
        self._go = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._go.clear()
        self.sleeping.set()
        await self._go.wait()
        self.sleeping.clear()

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
        before_warmup = spine.tick_size("KRW-BTC", 5.0)  # never warmed: the table
        first = await spine.warmed()  # nobody called warmup(): it ran at start-up
        assert first["refreshed_exchanges"] == ["upbit", "upbit-again"]
        assert first["total_markets"] == first["exchange_details"]["upbit"]["markets"]
        assert spine.client.statistics().sent["market"] == 1
        async with asyncio.timeout(5):
            await sleep.sleeping.wait()
        assert sleep.asked == [6 * 3600]  # the next one in six hours
        sleep.wake()  # six hours pass
        async with asyncio.timeout(5):
            await spine.warmed(2)
        assert spine.client.statistics().sent["market"] == 2
        # The warmed instrument answers, not the table (which has a tiny tick at price 5).
        instruments = await spine.client.instruments(["KRW-BTC"])
        assert spine.tick_size("KRW-BTC", 5.0) == instruments[0].tick_size != before_warmup
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failures and all("broken" in r.getMessage() for r in failures)
    assert "404" in failures[0].getMessage()  # the cause is in the log line
