"""Cold candle requests page the way Upbit does (full pages, ``to`` = the oldest start seen),
so they cost ceil(count/200) + 1 upstream calls on dense and sparse markets alike, and every
page is stored whole so neighbouring requests cost nothing. Counted by the simulator."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig, create_app

DENSE = "KRW-BTC"  # a trade every second
SPARSE = "KRW-AHT"  # about 12 trades a day: 1,000 1m candles span months


@pytest.fixture
def app() -> Any:
    return create_app(SimConfig(seed=5, rate_limit=0))


@pytest.fixture
async def spine(app: Any, tmp_path: Path) -> AsyncIterator[Spine]:
    async with Spine(
        "http://sim", tmp_path / "paging.db", transport=httpx.ASGITransport(app=app)
    ) as s:
        yield s


async def sim_requests(app: Any) -> int:
    """Every request the simulator has served, whatever its group."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as c:
        stats = (await c.get("/sim/stats")).json()
    return int(sum(stats["requests"]["by_group"].values()))


@pytest.mark.parametrize("market", [DENSE, SPARSE])
async def test_cold_count_costs_at_most_one_call_per_page_plus_one(
    spine: Spine, app: Any, market: str
) -> None:
    count = 1000
    result = await spine.candles(market, "1m", count=count)
    calls = await sim_requests(app)
    assert calls <= math.ceil(count / 200) + 1, f"{calls} calls for {count} candles"
    assert result.meta.upstream_calls == calls
    assert len(result) == count
    starts = [c.start_ms for c in result]
    assert starts == sorted(set(starts))
    if market == SPARSE:  # the walk really crossed sparse history, not 1,000 minutes
        assert starts[-1] - starts[0] > 20 * count * 60_000


@pytest.mark.parametrize("market", [DENSE, SPARSE])
async def test_cold_closed_count_costs_the_pages_and_one_clock_call(
    spine: Spine, app: Any, market: str
) -> None:
    result = await spine.candles(market, "1h", count=450, closed_only=True)
    assert await sim_requests(app) <= math.ceil(450 / 200) + 1
    assert len(result) == 450 and not result.meta.forming


async def test_a_small_miss_fetches_a_full_page_and_the_next_request_is_free(
    spine: Spine, app: Any
) -> None:
    first = await spine.candles(DENSE, "1m", count=14, closed_only=True)
    assert len(first) == 14
    before = await sim_requests(app)
    spine.clear_memory()  # the store, not memory, must hold the rest of the page
    wider = await spine.candles(DENSE, "1m", count=60, closed_only=True)
    if wider[-1].start_ms == first[-1].start_ms:  # no minute closed in between
        assert await sim_requests(app) == before
        assert wider.meta.upstream_calls == 0 and wider.meta.source == "database"
    else:  # a minute closed: one page for the new minute at most
        assert await sim_requests(app) <= before + 1
    assert len(wider) == 60
    # An older range next to the asked one lies inside the full page: free as well.
    before = await sim_requests(app)
    older = await spine.candles(
        DENSE, "1m", start=first[0].start_ms - 100 * 60_000, end=first[0].start_ms
    )
    assert len(older) >= 90 and older.meta.upstream_calls == 0
    assert await sim_requests(app) == before


@pytest.mark.parametrize("market", [DENSE, SPARSE])
async def test_a_stored_count_is_read_back_from_the_store_alone(
    sim_spine: Spine, sim_app: Any, market: str
) -> None:
    # Memory lost (a restart, an eviction), the store holding every candle asked before:
    # the store answers all of it, however sparse the market (it read a capped first span,
    # then asked upstream for the rest instead of reading on).
    first = await sim_spine.candles(market, "15m", count=1000, closed_only=True)
    sim_spine.clear_memory()
    before = await sim_requests(sim_app)
    again = await sim_spine.candles(market, "15m", count=999, closed_only=True)
    assert list(again) == list(first)[-999:]
    assert again.meta.sources == ("database",) and again.meta.upstream_calls == 0
    assert await sim_requests(sim_app) == before
