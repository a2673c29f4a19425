"""Upbit's candle ``timestamp`` is the time of the last trade in the window, and can fall
tens of ms *after* the window ends (field notes). Coverage, gaps and what is closed come from
``candle_date_time_utc`` and the timeframe's grid alone: with every timestamp moved past its
window's end, a backfill stores the same candles with the same coverage, a rerun costs no
call, and a count read flags the same forming candle (the simulator in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ManualClock, UnpacedBudget

from marketspine._base.time import DAY_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES, Timeframe
from marketspine._client.client import Client
from marketspine._spine.spine import Spine
from marketspine._store.backfill import collect
from marketspine._store.sqlite import SQLiteStore
from marketspine.sim import SimConfig, create_app

NOW = parse_time("2026-11-20T12:34:56.789Z")
LATE_MS = 40  # past the window's end, as seen from Upbit


class LateTimestamps(httpx.AsyncBaseTransport):
    """The simulator, every candle's ``timestamp`` moved to ``LATE_MS`` after its window (but
    never past the simulator's now: the forming candle's last trade cannot be in the future)."""

    def __init__(self, app: Any, clock: ManualClock) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._clock = clock
        self.moved = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if "/candles/" not in request.url.path or response.status_code != 200:
            return response
        tf = _timeframe(request.url.path)
        rows = json.loads(await response.aread())
        for row in rows:
            start = parse_time(row["candle_date_time_utc"])
            row["timestamp"] = min(tf.next_start(start) + LATE_MS, self._clock())
            self.moved += 1
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(200, headers=headers, content=json.dumps(rows).encode())


def _timeframe(path: str) -> Timeframe:
    return TIMEFRAMES["1d"] if path.endswith("/days") else TIMEFRAMES["1m"]


@pytest.mark.parametrize("market", ["KRW-BTC", "KRW-AHT"])  # dense, and illiquid
async def test_late_timestamps_change_no_candle_coverage_or_call(
    market: str, tmp_path: Path
) -> None:
    clock = ManualClock(NOW)
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    late = LateTimestamps(app, clock)
    stored: dict[str, Any] = {}
    for name, transport in (("plain", httpx.ASGITransport(app=app)), ("late", late)):
        async with (
            Client("http://sim", transport=transport, budget=UnpacedBudget()) as client,
            SQLiteStore(tmp_path / f"{name}.db") as store,
        ):
            minute = TIMEFRAMES["1m"]
            first = await collect(
                client, store, [market], minute, since_ms=NOW - DAY_MS, until_ms=NOW, now_ms=NOW
            )
            again = await collect(
                client, store, [market], minute, since_ms=NOW - DAY_MS, until_ms=NOW, now_ms=NOW
            )
            assert again.upstream_calls == 0  # what was covered stays covered
            candles = await store.read(market, minute, 0, 2 * NOW)
            stored[name] = (
                first.upstream_calls,
                [(c.start_ms, c.open, c.high, c.low, c.close, c.volume) for c in candles],
                (await store.coverage(market, minute)).ranges,
            )
    assert late.moved > 0
    assert stored["late"] == stored["plain"]


async def test_the_forming_candle_is_judged_by_its_window_not_its_timestamp(
    tmp_path: Path,
) -> None:
    clock = ManualClock(NOW)
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    async with Spine(
        "http://sim", tmp_path / "spine.db", transport=LateTimestamps(app, clock), wall_ms=clock
    ) as spine:
        chart = await spine.candles("KRW-BTC", "1m", count=300)
        closed = await spine.candles("KRW-BTC", "1m", count=300, closed_only=True)
    minute = TIMEFRAMES["1m"]
    assert chart.meta.forming and chart[-1].start_ms == minute.floor(NOW)
    assert closed[-1].start_ms == minute.floor(NOW) - 60_000  # the newest closed one, kept
    assert [c.start_ms for c in closed][1:] == [c.start_ms for c in chart][:-1]
