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
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


async def _client(
    url: str, markets: list[str], first: int, until: float, sources: Counter[str],
    latencies: list[float],
) -> None:  # fmt: skip
    """One keep-alive connection asking ``/v1/ticker`` of the markets in turn, 20 times a
    second (raw HTTP/1.1 on asyncio streams: the generator costs little beside serve)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    k = first
    try:
        while time.perf_counter() < until:
            market = markets[k % len(markets)]
            k += 1
            request = f"GET /v1/ticker?markets={market} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            sent = time.perf_counter()
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            source = re.search(rb"(?i)x-marketspine-source: *(\w+)", head)
            await reader.readexactly(int(length[1]) if length else 0)
            latencies.append((time.perf_counter() - sent) * 1000)
            sources[source[1].decode() if source else "?"] += 1
            await asyncio.sleep(0.05)
    finally:
        writer.close()


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
    until = time.perf_counter() + SECONDS
    await asyncio.gather(
        *(
            _client(urls[i % len(urls)], markets, i, until, sources, latencies)
            for i in range(CLIENTS)
        )
    )
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
