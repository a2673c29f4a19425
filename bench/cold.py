"""A cold chart at any distance from Upbit (issue 22 item 1): ``candles(market, "1m",
count=1000)`` on a fresh Spine and an empty store, on a dense market (KRW-BTC, a trade every
second) and an illiquid one (KRW-AHT, about 12 trades a day: 1,000 minutes with a trade span
months), with the simulator's latency set to 30, 100, 200 and 300 ms (`POST /sim/faults`).
Each row gives the time, the upstream calls the simulator served and the time in round trips
(time / latency). The best of ``ROUNDS`` runs counts (the machine is shared); the calls are
the same in every run.

Then, at 100 ms, the spread of ``SPREAD_READS`` cold reads of 1,000 1m candles before
different ends (``count`` + ``end``, each ``END_STEP_DAYS`` further back, a fresh store
each) on markets from nearly dense to illiquid: round trips (time / latency) and calls, as
distributions, since a sparse market's cost depends on how its activity swings.

Last, at 200 ms with each new connection charged its TCP and TLS handshakes (two latencies,
``connect_ms``; the rows before leave them out, the simulator being plain HTTP on the
loopback): a cold dense read, and a ticker polled every 8 s on a warm Spine; over HTTP/1.1
(the plain simulator) and over HTTP/2 as Upbit offers it (the simulator over TLS, served
by hypercorn), where the pages sent together share the first page's connection.

`python -m bench cold` (or `python -m bench.cold`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench._sim import simulator
from bench._sim_tls import tls_simulator
from marketspine._budget.process import forget_process_budgets
from marketspine._spine.spine import Spine

Row = dict[str, Any]
LATENCIES_MS = (30, 100, 200, 300)
MARKETS = (("dense", "KRW-BTC"), ("illiquid", "KRW-AHT"))
COUNT = 1000
ROUNDS = 3
# Trades a day in the simulator: 2,500 (about 0.8 candles a minute), 600, 40, 12, 6 and 8.
SPREAD_MARKETS = ("KRW-SAND", "KRW-MBL", "KRW-MOC", "KRW-AHT", "KRW-META", "BTC-LINK")
SPREAD_LATENCY_MS = 100
SPREAD_READS = 20
END_STEP_DAYS = 3
CONNECT_LATENCY_MS = 200  # the handshake rows: a new connection costs two of these more
POLLS = 3
POLL_EVERY_S = 8.0  # longer than httpx's 5 s idle expiry, which the client raised to 55 s


async def _calls(http: httpx.AsyncClient) -> int:
    stats = (await http.get("/sim/stats")).json()
    return int(sum(stats["requests"]["by_group"].values()))


async def cold_read(url: str, db: Path, market: str, latency_ms: int) -> tuple[float, int]:
    """(seconds, upstream calls) of one cold ``count=COUNT`` read."""
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/faults", json={"latency_ms": latency_ms})
        await http.post("/sim/reset")
        forget_process_budgets()  # a new Spine stands for a new process: a budget of its own
        async with Spine(url, db, warmup_every_s=0) as spine:
            started = time.perf_counter()
            result = await spine.candles(market, "1m", count=COUNT)
            elapsed = time.perf_counter() - started
        assert len(result) == COUNT, len(result)
        return elapsed, await _calls(http)


async def cold_read_before(url: str, db: Path, market: str, end_ms: int) -> tuple[float, int]:
    """(seconds, upstream calls) of one cold ``count=COUNT`` read before ``end_ms``."""
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/reset")
        forget_process_budgets()  # a new Spine stands for a new process: a budget of its own
        async with Spine(url, db, warmup_every_s=0) as spine:
            started = time.perf_counter()
            result = await spine.candles(market, "1m", count=COUNT, end=end_ms)
            elapsed = time.perf_counter() - started
        assert len(result) == COUNT, len(result)
        return elapsed, await _calls(http)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread_rows(url: str, tmp: Path) -> list[Row]:
    """Round trips and calls of ``SPREAD_READS`` cold reads per market, as distributions."""
    rows: list[Row] = []
    goal_calls = math.ceil(COUNT / 200) + 1
    latency = SPREAD_LATENCY_MS
    asyncio.run(_set_latency(url, latency))
    newest = (time.time_ns() // 1_000_000 // 60_000) * 60_000 - 3_600_000
    for market in SPREAD_MARKETS:
        trips, calls = [], []
        for n in range(SPREAD_READS):
            end = newest - n * END_STEP_DAYS * 86_400_000 - n * 7 * 60_000
            seconds, used = asyncio.run(
                cold_read_before(url, tmp / f"spread-{market}-{n}.db", market, end)
            )
            trips.append(seconds * 1000 / latency)
            calls.append(used)
        name = f"{SPREAD_READS} cold 1m count={COUNT:,} before different ends, {market}"
        within = sum(c <= goal_calls for c in calls)
        rows += [
            {
                "benchmark": f"{name}: round trips at {latency} ms, median",
                "value": round(_quantile(trips, 0.5), 1),
                "unit": f"round trips (p90 {_quantile(trips, 0.9):.1f}, max {max(trips):.1f})",
                "goal": "≤ 2.5 (2 round trips + 50 ms)",
            },
            {
                "benchmark": f"{name}: upstream calls, most",
                "value": max(calls),
                "unit": f"calls (median {_quantile(calls, 0.5):g}; "
                f"{within}/{SPREAD_READS} ≤ {goal_calls})",
                "goal": f"≤ {goal_calls}",
            },
        ]
    return rows


async def _connection_setup(url: str, tmp: Path) -> tuple[float, float, list[float]]:
    """With each new connection charged its TCP and TLS handshakes (``connect_ms``, two
    latencies): seconds of a cold dense read on a new Spine and on one that has read before,
    and ms of each ticker polled every ``POLL_EVERY_S`` after the first."""
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/faults", json={"connect_ms": 2 * CONNECT_LATENCY_MS})
        try:
            colds = []
            for n in range(ROUNDS):
                db = tmp / f"connect-{n}.db"
                colds.append((await cold_read(url, db, "KRW-BTC", CONNECT_LATENCY_MS))[0])
            polls = []
            async with Spine(url, tmp / "polls.db", warmup_every_s=0) as spine:
                # A second cold read on a Spine that has read before: its connections kept.
                await spine.candles("KRW-BTC", "1m", count=COUNT)
                # Its six calls out of Upbit's 1 s window, so the budget holds none of the
                # next read's (the row measures the connections, not the rate limit).
                await asyncio.sleep(1.0)
                started = time.perf_counter()
                await spine.candles("KRW-ETH", "1m", count=COUNT)
                warm = time.perf_counter() - started
                for n in range(POLLS + 1):
                    if n:
                        await asyncio.sleep(POLL_EVERY_S)
                    started = time.perf_counter()
                    await spine.tickers(["KRW-BTC"])
                    polls.append((time.perf_counter() - started) * 1000)
        finally:
            await http.post("/sim/faults", json={"connect_ms": 0})
    return min(colds), warm, polls[1:]


def connection_rows(url: str, tmp: Path, protocol: str) -> list[Row]:
    """What a new connection's handshakes cost at a distance (the rows above leave them out:
    the simulator is plain HTTP on the loopback), over ``protocol`` (the server at ``url``
    speaks it)."""
    latency = CONNECT_LATENCY_MS
    tmp.mkdir()  # stores of their own: nothing read over another protocol
    cold, warm, polls = asyncio.run(_connection_setup(url, tmp))
    name = f"{latency} ms latency, {protocol}, a new connection's handshakes {2 * latency} ms"
    goal = f"≤ {2 * latency + 50:,} (2 round trips + 50 ms)"
    return [
        {
            "benchmark": f"cold 1m count={COUNT:,}, dense KRW-BTC, {name}: time",
            "value": round(cold * 1000, 1),
            "unit": f"ms ({cold * 1000 / latency:.1f} round trips)",
            "goal": goal,
        },
        {
            "benchmark": f"the same, KRW-ETH, on a Spine that has read before, {name}",
            "value": round(warm * 1000, 1),
            "unit": f"ms ({warm * 1000 / latency:.1f} round trips)",
            "goal": goal,
        },
        {
            "benchmark": f"a ticker every {POLL_EVERY_S:g} s on a warm Spine, {name}: most",
            "value": round(max(polls), 1),
            "unit": f"ms (of {len(polls)}; one round trip: {latency} ms)",
            "goal": f"≈ {latency} (connection reused)",
        },
    ]


async def _set_latency(url: str, latency_ms: int) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/faults", json={"latency_ms": latency_ms})


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
        rows += spread_rows(url, Path(tmp))
        rows += connection_rows(url, Path(tmp) / "http1", "HTTP/1.1")
        with tls_simulator() as tls_url:
            rows += connection_rows(tls_url, Path(tmp) / "http2", "HTTP/2")
    return rows


def main() -> None:
    for item in run():
        print(f"{item['benchmark']:<70} {item['value']:>10,} {item['unit']:<24} {item['goal']}")


if __name__ == "__main__":
    main()
    sys.exit(0)
