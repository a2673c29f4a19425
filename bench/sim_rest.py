"""Simulator REST throughput: candle requests per second with rate limiting off.

Three views of the same goal (≥ 1,000 candle requests/s on one core):

* ``direct ASGI``: the app called with a bare ASGI scope, no HTTP client at all — the
  server-side cost per request;
* ``httpx ASGITransport``: an in-process ``httpx.AsyncClient`` (what the test suites use);
* ``loopback``: ``marketspine sim`` in its own process, hammered over TCP by a minimal
  keep-alive HTTP/1.1 client with 8 connections (so client cost barely counts).

Requests mix ``count=1`` near-now pages with ``count=200`` historical pages (varying ``to``).
The last rows time near-now requests while other clients fetch history pages, with the
pages generated on the simulator's event loop and on its worker thread.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx

from bench._sim import start_simulator
from marketspine._base.time import DAY_MS, MINUTE_MS, format_utc, now_ms
from marketspine.sim import SimConfig, create_app, running

GOAL = ">= 1000"
DURATION_S = 2.0


def _paths(n: int, *, heavy_every: int = 10) -> list[str]:
    """``n`` candle paths: mostly count=1 near now, every ``heavy_every``-th a 200-candle
    historical page somewhere in the last 30 days (different each time: cold caches)."""
    now = now_ms()
    paths = []
    for i in range(n):
        if i % heavy_every == heavy_every - 1:
            to = format_utc(now - (i * 7919 % (30 * 1440)) * MINUTE_MS - DAY_MS)
            paths.append(f"/v1/candles/minutes/1?market=KRW-BTC&count=200&to={to}")
        else:
            paths.append("/v1/candles/minutes/1?market=KRW-BTC&count=1")
    return paths


def _row(name: str, value: float, goal: str = GOAL, unit: str = "req/s") -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 1), "unit": unit, "goal": goal}


async def _direct_asgi(paths: list[str]) -> float:
    app = create_app(SimConfig(rate_limit=0))
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def scope(path: str) -> dict[str, Any]:
        route, _, query = path.partition("?")
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": route,
            "raw_path": route.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"sim")],
            "client": ("127.0.0.1", 50000),
            "server": ("sim", 80),
        }

    return await _timed(paths, lambda path: app(scope(path), receive, send), statuses)


async def _httpx_asgi(paths: list[str]) -> float:
    app = create_app(SimConfig(rate_limit=0))
    statuses: list[int] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:

        async def one(path: str) -> None:
            statuses.append((await client.get(path)).status_code)

        return await _timed(paths, one, statuses)


async def _timed(paths: list[str], call: Callable[[str], Any], statuses: list[int]) -> float:
    for path in paths[:20]:  # warm up imports and the near-now caches
        await call(path)
    statuses.clear()
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < DURATION_S:
        await call(paths[done % len(paths)])
        done += 1
    elapsed = time.perf_counter() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {sorted(set(statuses))}")
    return done / elapsed


async def _loopback(base: str, paths: list[str], connections: int = 8) -> float:
    host, port = base.removeprefix("http://").split(":")
    deadline = time.perf_counter() + DURATION_S
    counts = [0] * connections

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            i = index
            while time.perf_counter() < deadline:
                path = paths[i % len(paths)]
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected answer {head[:40]!r}")
                length = int(re.search(rb"content-length: (\d+)", head, re.I)[1])  # type: ignore[index]
                await reader.readexactly(length)
                counts[index] += 1
                i += connections
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    return sum(counts) / (time.perf_counter() - started)


async def _near_now_beside_history(base: str, samples: int = 300) -> list[float]:
    """Round trips (ms) of near-now requests, one every 10 ms, while four clients fetch
    uncached 200-candle history pages back to back: how long an arrival waits for the loop,
    which is when the simulator stamps it for the rate limit."""
    stop = asyncio.Event()
    now = now_ms()

    async def history(client: httpx.AsyncClient, k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            back = (i * 7919 + k * 104729) % (300 * 1440)
            to = format_utc(now - back * MINUTE_MS - DAY_MS)
            params = {"market": ("KRW-BTC", "KRW-ETH")[k % 2], "count": 200, "to": to}
            (await client.get("/v1/candles/minutes/1", params=params)).raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        fetchers = [asyncio.create_task(history(client, k)) for k in range(4)]
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            (await client.get("/v1/market/all")).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*fetchers)
    return sorted(times)


def _stamp_rows() -> list[dict[str, Any]]:
    """The near-now round trips beside history pages, with the pages generated on the
    simulator's loop and on its worker thread (as ``marketspine sim`` does). The simulator
    runs on a thread of this process, so the two share the GIL with the clients."""
    rows = []
    for off_loop, where in ((False, "the loop"), (True, "a thread")):
        app = create_app(SimConfig(rate_limit=0), pages_off_loop=off_loop)
        with running(app=app) as base:
            times = asyncio.run(_near_now_beside_history(base))
        name = f"near-now round trip, history pages on {where}"
        goal = "-" if not off_loop else "below the loop's"
        rows.append(_row(f"{name}: median", times[len(times) // 2], goal, "ms"))
        rows.append(_row(f"{name}: p99", times[int(0.99 * len(times))], goal, "ms"))
    return rows


def _start_server() -> tuple[subprocess.Popen[str], str]:
    return start_simulator("--rate-limit", "0")


def run() -> list[dict[str, Any]]:
    """Rows of requests/s for each view (see the module docstring)."""
    paths = _paths(1000)
    light = _paths(1000, heavy_every=10**9)
    heavy = _paths(1000, heavy_every=1)
    rows = [
        _row("candles direct ASGI, count=1 near now", asyncio.run(_direct_asgi(light))),
        _row("candles direct ASGI, 10% count=200 history", asyncio.run(_direct_asgi(paths))),
        _row("candles direct ASGI, all count=200 history", asyncio.run(_direct_asgi(heavy))),
        _row("candles httpx ASGITransport, count=1 near now", asyncio.run(_httpx_asgi(light))),
    ]
    proc, base = _start_server()
    try:
        rows.append(
            _row("candles loopback TCP, count=1 near now", asyncio.run(_loopback(base, light)))
        )
        rows.append(
            _row("candles loopback TCP, 10% count=200 history", asyncio.run(_loopback(base, paths)))
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows + _stamp_rows()


if __name__ == "__main__":
    for row in run():
        print(f"{row['benchmark']:<48} {row['value']:>10,.1f} {row['unit']:<6} goal {row['goal']}")
