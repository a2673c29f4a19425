"""Candles derived from stored 1m candles equal Upbit's (the simulator's) own, every unit."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import UnpacedBudget

from marketspine import InvalidRequestError, parse_timeframe
from marketspine._base.coverage import Coverage
from marketspine._base.time import DAY_MS, MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._base.timeframes import Timeframe
from marketspine._client.client import Client
from marketspine._store.backfill import collect
from marketspine._store.derive import DERIVABLE, aggregate, derivable_ranges, derive_candles
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Candle
from marketspine.sim import SimConfig, create_app

NOW = parse_time("2026-11-20T12:34:56.789Z")
ONE_MINUTE = parse_timeframe("1m")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = create_app(SimConfig(rate_limit=0), clock=lambda: NOW)
    async with Client(
        "http://sim", transport=httpx.ASGITransport(app=app), budget=UnpacedBudget()
    ) as client:
        yield client


async def upstream(
    client: Client, market: str, tf: Timeframe, start: int, end: int
) -> list[Candle]:
    """Upstream's candles in ``[start, end)`` by chunks of 200 windows (none can hide)."""
    found: list[Candle] = []
    low = start
    while low < end:
        high = min(tf.shift(low, 200), end)
        found += [
            c for c in await client.candles(market, tf, count=200, to_ms=high) if c.start_ms >= low
        ]
        low = high
    return sorted(found, key=lambda c: c.start_ms)


def assert_same_candles(derived: list[Candle], upstream: list[Candle]) -> None:
    assert [c.start_ms for c in derived] == [c.start_ms for c in upstream]
    for mine, theirs in zip(derived, upstream, strict=True):
        assert (mine.market, mine.timeframe) == (theirs.market, theirs.timeframe)
        assert (mine.open, mine.high, mine.low, mine.close) == (
            theirs.open,
            theirs.high,
            theirs.low,
            theirs.close,
        )
        assert math.isclose(mine.volume, theirs.volume, rel_tol=1e-9)
        assert math.isclose(mine.value, theirs.value, rel_tol=1e-9)
        assert mine.last_trade_ms == theirs.last_trade_ms


@pytest.mark.parametrize("market", ["KRW-BTC", "KRW-MOC", "USDT-DOGE"])  # dense and sparse
async def test_derived_candles_equal_upstreams_for_every_unit(
    client: Client, market: str, tmp_path: Path
) -> None:
    end = parse_time("2026-11-20")  # three whole UTC days, so 1d is derivable too
    start = end - 3 * DAY_MS
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        await collect(client, store, [market], TF["1m"], since_ms=start, until_ms=end, now_ms=NOW)
        derived_any = 0
        for name in DERIVABLE:
            tf = parse_timeframe(name)
            result = await derive_candles(store, market, tf, start, end)
            assert result.covered.contains(start, end)
            assert_same_candles(result.candles, await upstream(client, market, tf, start, end))
            derived_any += len(result.candles)
        assert derived_any > 0


async def test_only_windows_whose_minutes_are_all_covered_are_derived(
    client: Client, tmp_path: Path
) -> None:
    market, hour = "KRW-BTC", parse_timeframe("1h")
    start = parse_time("2026-11-19")
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        # asked 00:30 .. 03:00, stored a full page: minutes of 23:40 .. 03:00 — the 23:00
        # hour is only partly covered
        await collect(
            client,
            store,
            [market],
            TF["1m"],
            since_ms=start + 30 * MINUTE_MS,
            until_ms=start + 180 * MINUTE_MS,
            now_ms=NOW,
        )
        result = await derive_candles(store, market, hour, start - DAY_MS, start + DAY_MS)
    assert result.covered.ranges == ((start, start + 3 * 3_600_000),)
    assert [c.start_ms for c in result.candles] == [start, start + 3_600_000, start + 7_200_000]


def minute(start: int, price: float, volume: float = 1.0) -> Candle:
    return Candle("KRW-X", "1m", start, price, price + 1, price - 1, price + 0.5, volume,
                  volume * price, start + 30_000)  # fmt: skip


def test_aggregate_skips_empty_windows_and_keeps_first_open_last_close() -> None:
    t0 = parse_time("2024-01-01")
    minutes = [minute(t0, 10), minute(t0 + 2 * MINUTE_MS, 12), minute(t0 + 9 * MINUTE_MS, 8)]
    five = aggregate(minutes, TF["5m"])
    assert [c.start_ms for c in five] == [t0, t0 + 5 * MINUTE_MS]  # 00:05 holds 00:09 only
    first = five[0]
    assert (first.open, first.close, first.high, first.low) == (10, 12.5, 13, 9)
    assert first.volume == 2.0 and first.value == 22.0
    assert first.last_trade_ms == minutes[1].last_trade_ms
    assert aggregate([], TF["1h"]) == []


def test_listing_makes_earlier_minutes_known_empty_and_bad_input_is_refused() -> None:
    t0 = parse_time("2024-01-01")
    coverage = Coverage.of(
        [(t0 + 30 * MINUTE_MS, t0 + 120 * MINUTE_MS)], listing_ms=t0 + 30 * MINUTE_MS
    )
    assert derivable_ranges(coverage, TF["1h"], t0 - DAY_MS, t0 + DAY_MS) == [
        (t0 - DAY_MS, t0 + 2 * 3_600_000)
    ]
    with pytest.raises(InvalidRequestError, match="derivable are 3m"):
        aggregate([], TF["1w"])
    with pytest.raises(InvalidRequestError, match="takes 1m candles"):
        aggregate([minute(t0, 1).__replace__(timeframe=TF["3m"])], TF["1h"])
