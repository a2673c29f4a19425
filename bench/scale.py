"""Scale-out: a budget acquisition through Redis (p50/p99), PostgreSQL beside SQLite (write
candles/s through a page of 200 and one of 10,000; read of 1,000 candles p99), and the
combined backfill of several ``collect`` processes sharing Redis and PostgreSQL against one
simulator at Upbit's 10 req/s (candles/s against the ceiling of 2,000, and the 429s and 418s
the simulator answered them).

Uses the machine's Redis (127.0.0.1:6379) and PostgreSQL (postgres@127.0.0.1:5432/test) in a
key prefix / schema of its own, removed afterwards. ``python -m bench.scale``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from redis.asyncio import Redis

from bench._sim import simulator
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._budget.redis import RedisRateBudget
from marketspine._budget.rules import Priority
from marketspine._store.postgres import PostgresStore
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Candle

REDIS = "redis://127.0.0.1:6379/0"
PG = "postgresql://postgres@127.0.0.1:5432/test"
T0 = 1_700_000_000_000 // 60_000 * 60_000
PROCESSES = 4


def _row(name: str, value: float, unit: str, goal: str = "") -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _budget_rows(prefix: str) -> list[dict[str, Any]]:
    # A limit high enough that nobody waits: what is measured is the script's round trip.
    async with RedisRateBudget(REDIS, prefix=prefix, limit=1_000_000) as budget:
        for _ in range(200):
            await budget.acquire("candles", Priority.NORMAL)
        costs = []
        for _ in range(3000):
            started = time.perf_counter()
            await budget.acquire("candles", Priority.NORMAL)
            costs.append((time.perf_counter() - started) * 1000)
    return [
        _row("Redis budget acquisition p50", _pct(costs, 0.5), "ms", "< 1 ms"),
        _row("Redis budget acquisition p99", _pct(costs, 0.99), "ms", "< 2 ms"),
    ]


def _candles(n: int, first: int) -> list[Candle]:
    return [
        Candle("KRW-BTC", "1m", first + i * 60_000, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i,
               0.25 * i, 10.5 * i, first + i * 60_000 + 59_000)
        for i in range(n)
    ]  # fmt: skip


async def _store_rows(store: SQLiteStore | PostgresStore, name: str) -> list[dict[str, Any]]:
    tf = TIMEFRAMES["1m"]
    rows = []
    at = T0
    started = time.perf_counter()
    for _ in range(100):  # 100 pages of 200, as collect writes them
        page = _candles(200, at)
        await store.write_page("KRW-BTC", tf, page, (at, at + 200 * 60_000))
        at += 200 * 60_000
    rows.append(_row(f"{name} write, pages of 200", 20_000 / (time.perf_counter() - started),
                     "candles/s"))  # fmt: skip
    big = _candles(10_000, at)
    started = time.perf_counter()
    await store.write_page("KRW-BTC", tf, big, (at, at + 10_000 * 60_000))
    rows.append(_row(f"{name} write, one page of 10,000", 10_000 / (time.perf_counter() - started),
                     "candles/s"))  # fmt: skip
    reads = []
    for i in range(200):
        start = T0 + (i * 7919 % 19_000) * 60_000
        began = time.perf_counter()
        got = await store.read("KRW-BTC", tf, start, start + 1000 * 60_000)
        reads.append((time.perf_counter() - began) * 1000)
        assert len(got) == 1000
    rows.append(_row(f"{name} read of 1,000 candles p99", _pct(reads, 0.99), "ms", "< 10 ms"))
    return rows


def _backfill_rows(schema_url: str) -> list[dict[str, Any]]:
    """PROCESSES collect processes, the same markets, sharing Redis and PostgreSQL."""
    console = str(Path(sys.executable).with_name("marketspine"))
    prefix_redis = REDIS  # page-lease and budget keys use the default prefix: clean after
    with simulator("--latency-ms", "30", "--rate-limit", "10") as url:
        # 21 days of 1m for four markets: 605 pages, a minute at the ceiling, start-up included.
        args = [console, "collect", "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "-t", "1m",
                "--since", "2026-01-01", "--until", "2026-01-22", "--db", schema_url,
                "--upstream", url, "--redis", prefix_redis, "--json"]  # fmt: skip
        started = time.perf_counter()
        procs = [
            subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(PROCESSES)
        ]
        outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
        elapsed = time.perf_counter() - started
        upstream = httpx.get(url + "/sim/stats", timeout=10).json()
    calls = sum(o["upstream_calls"] for o in outs)
    with psycopg.connect(schema_url) as conn:
        (stored,) = conn.execute("SELECT COUNT(*) FROM candles").fetchone() or (0,)
    return [
        _row(
            f"{PROCESSES} collect processes: candles stored per s",
            stored / elapsed,
            "candles/s",
            "≥ 1,800 (90% of the ceiling of 2,000, wall clock from start-up)",
        ),
        _row(f"{PROCESSES} collect processes: pages fetched (each once)", calls, "pages"),
        _row(
            f"{PROCESSES} collect processes: 429s + 418s",
            upstream["429"] + upstream["418"],
            "count",
            "0",
        ),
    ]


async def _run() -> list[dict[str, Any]]:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    rows = await _budget_rows(prefix)
    try:
        for kind in ("sqlite", "postgresql"):
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            admin.execute(f"CREATE SCHEMA {schema}")
            url = f"{PG}?options=-csearch_path%3D{schema}"
            with tempfile.TemporaryDirectory() as tmp:
                store: SQLiteStore | PostgresStore = (
                    SQLiteStore(Path(tmp) / "bench.sqlite")
                    if kind == "sqlite"
                    else PostgresStore(url)
                )
                async with store:
                    rows += await _store_rows(store, "SQLite" if kind == "sqlite" else "PostgreSQL")
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
        rows += await asyncio.to_thread(_backfill_rows, f"{PG}?options=-csearch_path%3D{schema}")
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
        client = Redis.from_url(REDIS)
        for pattern in (f"{prefix}*", "marketspine:page:*", "marketspine:budget:*"):
            keys = [k async for k in client.scan_iter(match=pattern)]
            if keys:
                await client.delete(*keys)
        await client.aclose()
    return rows


def run() -> list[dict[str, Any]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for row in run():
        print(f"{row['benchmark']:<55} {row['value']:>12,.3f} {row['unit']}")
