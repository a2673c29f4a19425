"""Collectors sharing page leases in Redis (the machine's, under a prefix of the test's own)
whose ranges overlap, as two ``collect --redis`` of different ranges are: on the page grid
they ask the same pages where the ranges overlap, so each is fetched once between them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from helpers import Recorder, UnpacedBudget
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._base.time import DAY_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES
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
    leases = RedisPageLeases(redis, prefix=redis_space.prefix)
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
