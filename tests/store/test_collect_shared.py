"""Collectors sharing page leases in Redis (the machine's, under a prefix of the test's own)
whose ranges overlap, as two ``collect --redis`` of different ranges are: on the page grid
they ask the same pages where the ranges overlap, so each is fetched once between them."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Recorder, UnpacedBudget
from redis.asyncio import Redis
from services import PrivateRedis, RedisSpace

from marketspine._base.time import DAY_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._budget.redis import RedisRateBudget
from marketspine._client.client import Client
from marketspine._store.backfill import collect
from marketspine._store.page_lease import RedisPageLeases
from marketspine._store.sqlite import SQLiteStore
from marketspine.sim import SimConfig, create_app

NOW = parse_time("2026-11-20T12:34:56.789Z")
MINUTE = TIMEFRAMES["1m"]
MARKETS = ("KRW-BTC", "KRW-ETH")


def rows(path: Path, start_ms: int, end_ms: int) -> set[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        query = "SELECT * FROM candles WHERE start_ms >= ? AND start_ms < ?"
        return set(conn.execute(query, (start_ms, end_ms)).fetchall())


async def run_collect(
    client: Client, path: Path, since_ms: int, until_ms: int, leases: RedisPageLeases | None
) -> int:
    async with SQLiteStore(path) as store:
        summary = await collect(
            client, store, MARKETS, MINUTE,
            since_ms=since_ms, until_ms=until_ms, now_ms=NOW,
            leases=leases, keep_below=False, grid=True,
        )  # fmt: skip
    return summary.upstream_calls


async def test_collectors_of_overlapping_ranges_fetch_the_overlap_once(
    redis_space: RedisSpace, tmp_path: Path
) -> None:
    week = (NOW - 7 * DAY_MS, NOW)
    earlier = (NOW - 10 * DAY_MS, NOW - 3 * DAY_MS)  # four days in common with the week
    union = (earlier[0], week[1])
    recorder = Recorder(create_app(SimConfig(rate_limit=0), clock=lambda: NOW))
    redis = Redis.from_url(redis_space.url)
    leases = RedisPageLeases(redis, upstream="http://sim", prefix=redis_space.prefix)
    transport = httpx.ASGITransport(app=recorder)
    try:
        async with Client("http://sim", transport=transport, budget=UnpacedBudget()) as client:
            # Each plans its whole range (a store of its own): the plans differ.
            one, other = await asyncio.gather(
                run_collect(client, tmp_path / "one.sqlite", *week, leases),
                run_collect(client, tmp_path / "other.sqlite", *earlier, leases),
            )
            shared_calls = len(recorder.queries)
            alone = await run_collect(client, tmp_path / "alone.sqlite", *union, None)
    finally:
        await redis.aclose()
    assert one + other == shared_calls
    assert len(set(recorder.queries[:shared_calls])) == shared_calls  # no page asked twice
    # What one collector of the whole span asks, plus, per market, the other's first page
    # (at its range's end, off the grid) and the page that joins the grid below it.
    assert shared_calls <= alone + 2 * len(MARKETS)
    assert rows(tmp_path / "one.sqlite", *week) == rows(tmp_path / "alone.sqlite", *week)
    assert rows(tmp_path / "other.sqlite", *earlier) == rows(tmp_path / "alone.sqlite", *earlier)


@pytest.mark.process
async def test_a_redis_refusing_writes_is_said_once_and_the_collect_goes_on_alone(
    private_redis: PrivateRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis full (maxmemory reached, no eviction) refuses every write: the page leases and
    # the rate budget work alone, each saying so once, and every candle is stored. Once it
    # takes writes again, the leases say so once and share again.
    caplog.set_level(logging.INFO, logger="marketspine")
    recorder = Recorder(create_app(SimConfig(rate_limit=0), clock=lambda: NOW))
    redis = Redis.from_url(private_redis.url)
    await redis.config_set("maxmemory", 1)  # one byte: already over, so nothing is written
    await redis.config_set("maxmemory-policy", "noeviction")
    leases = RedisPageLeases(redis, upstream="http://sim", prefix="full:")
    budget = RedisRateBudget(private_redis.url, prefix="full:", retry_every_s=0.05)
    day = (NOW - DAY_MS, NOW)
    try:
        transport = httpx.ASGITransport(app=recorder)
        async with budget, Client("http://sim", transport=transport, budget=budget) as client:
            calls = await run_collect(client, tmp_path / "full.sqlite", *day, leases)
            assert leases.fetched == 0 and calls == len(recorder.queries) > 2
            await redis.config_set("maxmemory", 0)
            await run_collect(client, tmp_path / "again.sqlite", *day, leases)
            assert leases.fetched > 0  # under leases again
    finally:
        await redis.aclose()
    said = [
        (r.levelname, r.getMessage().split(" (")[0])
        for r in caplog.records
        if "Redis" in r.getMessage() and r.name.startswith("marketspine")
    ]
    assert said.count(("WARNING", "Redis unreachable for page leases")) == 1
    again = "Redis usable again for page leases: each page fetched once again"
    assert said.count(("INFO", again)) == 1
    assert sum(1 for level, text in said if text == "Redis unreachable" and level == "WARNING") == 1
    assert rows(tmp_path / "full.sqlite", *day) == rows(tmp_path / "again.sqlite", *day)
    assert len(rows(tmp_path / "full.sqlite", *day)) > 1000


async def test_collectors_of_different_upstreams_never_share_a_page(
    redis_space: RedisSpace, tmp_path: Path
) -> None:
    # A simulator and "Upbit" (another simulator, another seed) behind one Redis: the same
    # pages asked of each, each stored from its own upstream.
    day = (NOW - DAY_MS, NOW)
    redis = Redis.from_url(redis_space.url)
    paths = {}
    try:
        for seed, url in ((1, "http://127.0.0.1:8765"), (2, "https://api.upbit.com")):
            app = create_app(SimConfig(seed=seed, rate_limit=0), clock=lambda: NOW)
            leases = RedisPageLeases(redis, upstream=url, prefix=redis_space.prefix)
            transport = httpx.ASGITransport(app=app)
            async with Client(url, transport=transport, budget=UnpacedBudget()) as client:
                paths[seed] = tmp_path / f"{seed}.sqlite"
                calls = await run_collect(client, paths[seed], *day, leases)
            assert calls > 0 and leases.shared == 0 and leases.fetched == calls
        again = RedisPageLeases(redis, upstream="http://127.0.0.1:8765/", prefix=redis_space.prefix)
        app = create_app(SimConfig(seed=1, rate_limit=0), clock=lambda: NOW)
        async with Client(
            "http://127.0.0.1:8765", transport=httpx.ASGITransport(app=app), budget=UnpacedBudget()
        ) as client:
            await run_collect(client, tmp_path / "again.sqlite", *day, again)
        assert again.shared > 0  # the same upstream's pages are shared, as before
    finally:
        await redis.aclose()
    assert rows(paths[1], *day) != rows(paths[2], *day)
    assert rows(tmp_path / "again.sqlite", *day) == rows(paths[1], *day)
