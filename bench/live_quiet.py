"""Live answers that stay live: two ``serve --redis`` processes (one holds the upstream
WebSocket, the other follows through Redis) in front of one simulator running in real time,
and 16 clients asking ``/v1/ticker`` of five markets, quiet ones among them, for 20 s. A
watched market's ticker should come from the live state after the first request however long
the market stays silent: the share answered ``live`` and the latency per answer.

Uses the machine's Redis (127.0.0.1:6379) under serve's own key prefix.
``python -m bench live_quiet``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench._sim import simulator
from bench.serve import _process

REDIS = "redis://127.0.0.1:6379/0"
CLIENTS = 16
SECONDS = 20.0


def _row(name: str, value: float, unit: str, goal: str = "") -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def _serve_args(upstream: str, db: Path) -> list[str]:
    return [
        sys.executable, "-m", "marketspine", "serve", "--upstream", upstream, "--db", str(db),
        "--port", "0", "--admin-token", "bench-token-0123456789", "--redis", REDIS,
    ]  # fmt: skip


async def _load(sim: str, urls: list[str]) -> tuple[Counter[str], list[float]]:
    sources: Counter[str] = Counter()
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http:
        listed = [m["market"] for m in (await http.get(f"{sim}/v1/market/all")).json()]
        krw = [m for m in listed if m.startswith("KRW-")]
        markets = krw[:2] + krw[-3:]  # the busiest two and three of the quietest
        for url in urls:  # the first ask of each market starts its watch: not counted
            for market in markets:
                (await http.get(f"{url}/v1/ticker", params={"markets": market})).raise_for_status()
        await asyncio.sleep(2.0)  # let the subscriptions' snapshots arrive

        async def client(index: int) -> None:
            url = urls[index % len(urls)]
            deadline = time.perf_counter() + SECONDS
            k = index
            while time.perf_counter() < deadline:
                market = markets[k % len(markets)]
                k += 1
                started = time.perf_counter()
                answer = await http.get(f"{url}/v1/ticker", params={"markets": market})
                latencies.append((time.perf_counter() - started) * 1000)
                sources[answer.headers.get("x-marketspine-source", "?")] += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return sources, latencies


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp, simulator("--rate-limit", "10") as sim:
        dbs = [Path(tmp) / f"serve{i}.db" for i in range(2)]
        with (
            _process(_serve_args(sim, dbs[0])) as (first, _),
            _process(_serve_args(sim, dbs[1])) as (second, _),
        ):
            sources, latencies = asyncio.run(_load(sim, [first, second]))
    total = sum(sources.values())
    latencies.sort()
    return [
        _row(
            f"/v1/ticker of watched markets, {CLIENTS} clients on 2 serve --redis: answered live",
            100 * sources.get("live", 0) / max(1, total), "%", "≥ 99",
        ),
        _row("/v1/ticker of watched markets: answers", total, "count"),
        _row("/v1/ticker of watched markets, p50", statistics.median(latencies), "ms"),
        _row(
            "/v1/ticker of watched markets, p99",
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], "ms", "≤ 5",
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run():
        print(row)
