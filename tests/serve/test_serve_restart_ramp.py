"""Field notes, "ban on restart": a caching proxy restarted under several bots with many
pairs re-downloads every pair and timeframe at once and gets the IP banned. serve restarted
on its database answers the stored closed candles without a call, and what it must fetch (the
newest pages, with their forming candle) ramps within the budget: no 429 (in-process serve
and simulator, Upbit's limit of 10 a second on)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from helpers import sim_app_stats
from serve_support import in_process_serve, service_client

from marketspine.sim import SimConfig, create_app

PAIRS = 8
PATHS = ["/v1/candles/minutes/1", "/v1/candles/minutes/15", "/v1/candles/minutes/60"]
TO = "2026-11-01T00:00:00"
BOTS = 3


async def ask_all(
    http: httpx.AsyncClient, markets: list[str], **params: Any
) -> list[httpx.Response]:
    """Every pair and timeframe, by every bot at once."""
    asks = [
        http.get(path, params={"market": market, "count": 200, **params},
                 headers={"X-Marketspine-Client": f"bot-{bot}"})
        for bot in range(BOTS) for market in markets for path in PATHS
    ]  # fmt: skip
    return list(await asyncio.gather(*asks))


def prices(answer: httpx.Response) -> list[tuple[Any, ...]]:
    """Each candle's window and prices. Its traded sums may differ in the last bits where one
    answer was built from stored 1m candles and the other was upstream's own."""
    fields = ("market", "candle_date_time_utc", "opening_price", "high_price", "low_price")
    return [(*(row[f] for f in fields), row["trade_price"]) for row in answer.json()]


async def test_a_restart_under_many_bots_answers_from_its_database_and_ramps_within_budget(
    tmp_path: Path,
) -> None:
    app = create_app(SimConfig(seed=1))
    db = tmp_path / "serve.db"
    async with in_process_serve(app, db) as first, service_client(first) as http:
        listed = (await http.get("/v1/market/all")).json()
        markets = [m["market"] for m in listed if m["market"].startswith("KRW-")][:PAIRS]
        history = await ask_all(http, markets, to=TO)
    assert all(r.status_code == 200 for r in history), {r.status_code for r in history}
    before = await sim_app_stats(app)
    async with in_process_serve(app, db) as second, service_client(second) as http:
        again = await ask_all(http, markets, to=TO)
        between = await sim_app_stats(app)
        newest = await ask_all(http, markets)
    after = await sim_app_stats(app)
    assert [prices(r) for r in again] == [prices(r) for r in history]
    # From the database, or serve's kept answer of another bot's same request just made.
    assert {r.headers["X-Marketspine-Source"] for r in again} <= {"database", "memory"}
    assert between["requests"]["by_group"] == before["requests"]["by_group"]  # no call at all
    # The newest pages: a call or two per pair and timeframe (the bots' identical requests
    # share them), none refused.
    calls = after["requests"]["by_group"]["candles"] - between["requests"]["by_group"]["candles"]
    assert 0 < calls <= 2 * PAIRS * len(PATHS), calls
    assert all(r.status_code == 200 for r in newest), {r.status_code for r in newest}
    assert (after["429"], after["418"]) == (0, 0)
