"""Warmup: every configured exchange fetched once per URL, failures reported per exchange,
the catalog kept across restarts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

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
            report = await spine.warmup()
        assert report["success"] is False
        assert report["refreshed_exchanges"] == ["upbit-kr", "upbit-kr-again", "upbit-sg"]
        details = report["exchange_details"]
        assert details["broken"]["success"] is False and "404" in details["broken"]["error"]
        kr_count = details["upbit-kr"]["markets"]
        assert details["upbit-kr"]["instruments"] == kr_count == 27  # 30, 3 delisted
        assert report["total_markets"] == 2 * kr_count + details["upbit-sg"]["markets"]
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
