"""A cold chart at any distance from Upbit (issue 22 item 1): ``candles(market, "1m",
count=1000)`` on a fresh Spine and an empty store, on a dense market (KRW-BTC, a trade every
second) and an illiquid one (KRW-AHT, about 12 trades a day: 1,000 minutes with a trade span
months), with the simulator's latency set to 30, 100, 200 and 300 ms (`POST /sim/faults`).
Each row gives the time, the upstream calls the simulator served and the time in round trips
(time / latency). The best of ``ROUNDS`` runs counts (the machine is shared); the calls are
the same in every run.

`python -m bench cold` (or `python -m bench.cold`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._sim import simulator
from marketspine._spine.spine import Spine

Row = dict[str, Any]
LATENCIES_MS = (30, 100, 200, 300)
MARKETS = (("dense", "KRW-BTC"), ("illiquid", "KRW-AHT"))
COUNT = 1000
ROUNDS = 3


async def _calls(http: httpx.AsyncClient) -> int:
    stats = (await http.get("/sim/stats")).json()
    return int(sum(stats["requests"]["by_group"].values()))


async def cold_read(url: str, db: Path, market: str, latency_ms: int) -> tuple[float, int]:
    """(seconds, upstream calls) of one cold ``count=COUNT`` read."""
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/faults", json={"latency_ms": latency_ms})
        await http.post("/sim/reset")
        async with Spine(url, db, warmup_every_s=0) as spine:
            started = time.perf_counter()
            result = await spine.candles(market, "1m", count=COUNT)
            elapsed = time.perf_counter() - started
        assert len(result) == COUNT, len(result)
        return elapsed, await _calls(http)


def run() -> list[Row]:
    rows: list[Row] = []
    goal_calls = math.ceil(COUNT / 200) + 1
    with tempfile.TemporaryDirectory() as tmp, simulator() as url:
        for latency in LATENCIES_MS:
            for label, market in MARKETS:
                runs = []
                for n in range(ROUNDS):
                    db = Path(tmp) / f"{market}-{latency}-{n}.db"
                    runs.append(asyncio.run(cold_read(url, db, market, latency)))
                best = min(seconds for seconds, _ in runs)
                name = f"cold 1m count={COUNT:,}, {label} {market}, {latency} ms latency"
                goal_ms = 2 * latency + 50
                rows += [
                    {
                        "benchmark": f"{name}: time",
                        "value": round(best * 1000, 1),
                        "unit": f"ms ({best * 1000 / latency:.1f} round trips)",
                        "goal": f"≤ {goal_ms:,} (2 round trips + 50 ms)",
                    },
                    {
                        "benchmark": f"{name}: upstream calls",
                        "value": max(c for _, c in runs),
                        "unit": "calls",
                        "goal": f"≤ {goal_calls}",
                    },
                ]
    return rows


def main() -> None:
    for item in run():
        print(f"{item['benchmark']:<70} {item['value']:>10,} {item['unit']:<24} {item['goal']}")


if __name__ == "__main__":
    main()
    sys.exit(0)
