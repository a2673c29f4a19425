"""What Upbit cannot give: 1s candles older than ~3 months are unserved, not
empty; a delisted market's stored history stays readable; a listing is learned once.
Against the simulator (in-process for Spine, on a loopback port for the CLI), simulated
time fixed by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketspine import UnknownMarketError
from marketspine._base.time import DAY_MS, HOUR_MS, MINUTE_MS, format_utc
from marketspine._base.timeframes import parse_timeframe
from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig, create_app

BTC, XRP = "KRW-BTC", "KRW-XRP"
SECOND = parse_timeframe("1s")


@pytest.fixture
def app(sim_clock: Callable[[], int]) -> Any:
    return create_app(SimConfig(rate_limit=0), clock=sim_clock)


@pytest.fixture
async def spine(app: Any, tmp_path: Path) -> AsyncIterator[Spine]:
    async with Spine(
        "http://sim", tmp_path / "spine.db", transport=httpx.ASGITransport(app=app)
    ) as s:
        yield s


async def sim_call(app: Any, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        response = await client.request(method, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def candle_calls(app: Any) -> int:
    stats = await sim_call(app, "GET", "/sim/stats")
    return int(stats["requests"]["by_group"].get("candles", 0))


# -- 1s candles beyond the horizon ------------------------------------------------------------


async def test_1s_candles_beyond_three_months_are_unserved_never_covered(
    app: Any, spine: Spine, sim_clock: Callable[[], int]
) -> None:
    await spine.candles(BTC, "1m", count=1)  # hears upstream's clock (a test's, months back)
    calls = await candle_calls(app)
    start = sim_clock() - 100 * DAY_MS
    for _ in range(2):  # and asking again still knows it is unknown, not empty
        result = await spine.candles(BTC, "1s", start=start, end=start + 10 * MINUTE_MS)
        assert list(result) == []
        assert result.meta.unserved_before_ms is not None
        assert result.meta.unserved_before_ms > start + 10 * MINUTE_MS
        assert result.meta.upstream_calls == 0
    assert await candle_calls(app) == calls
    assert (await spine.store.coverage(BTC, SECOND)).ranges == ()


async def test_1s_candles_across_the_horizon_cover_only_the_served_part(
    app: Any, spine: Spine, sim_clock: Callable[[], int]
) -> None:
    await spine.candles(BTC, "1m", count=1)  # hears upstream's clock (a test's, months back)
    now = sim_clock()
    # A day before Upbit's ~90-day horizon to two hours after it: a few pages of the served
    # part (an hour of it lies inside Spine's safety margin), the rest unserved.
    start = now - 91 * DAY_MS
    end = now - 90 * DAY_MS + 2 * HOUR_MS
    result = await spine.candles(BTC, "1s", start=start, end=end)
    served_from = result.meta.unserved_before_ms
    assert served_from is not None and start < served_from < end
    assert len(result) > 100 and result[0].start_ms >= now - 90 * DAY_MS
    assert result[-1].start_ms < end
    covered = (await spine.store.coverage(BTC, SECOND)).ranges
    assert covered and covered[0][0] >= result[0].start_ms


async def test_a_count_of_1s_candles_stops_at_the_horizon_and_says_so(
    app: Any, spine: Spine, sim_clock: Callable[[], int]
) -> None:
    # A market trading a few times a day has far fewer 1s candles in 90 days than asked.
    result = await spine.candles("KRW-META", "1s", count=50_000, closed_only=True)
    assert 0 < len(result) < 50_000
    horizon = sim_clock() - 90 * DAY_MS
    unserved = result.meta.unserved_before_ms
    assert unserved is not None and abs(unserved - horizon) <= 1000  # Date: whole seconds
    assert result[0].start_ms >= sim_clock() - 90 * DAY_MS
    assert (await spine.store.listing("KRW-META", SECOND)) is None  # the horizon is no listing


# -- delisted markets --------------------------------------------------------------------------


async def test_a_delisted_market_is_still_served_from_the_store(app: Any, spine: Spine) -> None:
    before = await spine.candles(XRP, "1m", count=300, closed_only=True)
    assert len(before) == 300 and not before.meta.delisted
    await sim_call(app, "POST", "/sim/delist", json={"market": XRP})
    spine.clear_memory()
    calls = await candle_calls(app)
    # Asking for the forming candle meets Upbit's 404: the market is delisted.
    latest = await spine.candles(XRP, "1m", count=300)
    assert list(latest) == list(before) and latest.meta.delisted
    after = await spine.candles(XRP, "1m", count=300, closed_only=True)
    assert list(after) == list(before)
    assert after.meta.delisted and after.meta.sources == ("database",)
    ranged = await spine.candles(XRP, "1m", start=before[10].start_ms, end=before[20].start_ms)
    assert list(ranged) == list(before[10:20]) and ranged.meta.delisted
    # A count before an end (Upbit's ``to``): the stored candles before it.
    counted = await spine.candles(XRP, "1m", count=50, end=before[100].start_ms + 1)
    assert list(counted) == list(before[51:101]) and counted.meta.delisted
    # Derived timeframes come from the stored 1m candles.
    five = await spine.candles(XRP, "5m", count=10)
    assert len(five) == 10 and five.meta.delisted
    assert await candle_calls(app) == calls + 1  # the one 404, then no candle page
    listed = {m.market: m for m in await spine.markets(refresh=True)}
    assert XRP not in listed and not any(m.delisted for m in listed.values())
    assert list(await spine.store.delisted()) == [XRP]  # kept for `status`
    held = {m.market: m for m in await spine.markets(include_delisted=True)}
    assert held[XRP].delisted and not held[BTC].delisted


async def test_a_delisted_market_never_stored_is_unknown(app: Any, spine: Spine) -> None:
    with pytest.raises(UnknownMarketError):
        await spine.candles("KRW-HUNT", "1m", count=5)  # delisted in the seeded past


# -- listing learned once -----------------------------------------------------------------------


async def test_a_listing_is_learned_once_then_never_asked_again(
    app: Any, spine: Spine, sim_clock: Any
) -> None:
    listing = app.state.sim.history.market("KRW-WAL").listed_ms  # listed mid-history
    sim_clock.ms = listing + 3 * DAY_MS + 7 * MINUTE_MS
    first = await spine.candles("KRW-WAL", "1h", start=listing - 30 * DAY_MS, end=listing + DAY_MS)
    assert first and first[0].start_ms >= listing
    assert await spine.store.listing("KRW-WAL", parse_timeframe("1h")) == first[0].start_ms
    calls = await candle_calls(app)
    spine.clear_memory()
    again = await spine.candles("KRW-WAL", "1h", start=listing - 400 * DAY_MS, end=listing + DAY_MS)
    assert list(again) == list(first)
    assert await candle_calls(app) == calls  # nothing is asked before the listing


# -- the CLI -----------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marketspine", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.process
def test_collect_says_what_upbit_does_not_serve_and_records_nothing(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: Callable[[], int],
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "s.db")
    since = sim_clock() - 100 * DAY_MS
    until = since + DAY_MS
    with running_sim(SimConfig(rate_limit=0), sim_clock) as url:
        done = cli(
            "collect", BTC, "-t", "1s", "--since", format_utc(since), "--until",
            format_utc(until), "--db", db, "--upstream", url,
        )  # fmt: skip
        candles = httpx.get(url + "/sim/stats").json()["requests"]["by_group"].get("candles", 0)
    assert done.returncode == 3, done.stderr
    assert "beyond what Upbit serves" in done.stderr and format_utc(since) in done.stderr
    assert "nothing could be collected" in done.stderr
    assert candles == 0
    status = cli("status", "--db", db, "--json")
    assert status.returncode == 0, status.stderr
    series = json.loads(status.stdout)["series"]
    assert not any(s["timeframe"] == "1s" and s["ranges"] for s in series)


@pytest.mark.process
def test_collect_of_a_delisted_market_says_why(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: Callable[[], int],
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "d.db")
    now = sim_clock()
    with running_sim(SimConfig(rate_limit=0), sim_clock) as url:
        args = ("-t", "1m", "--db", db, "--upstream", url)
        first = cli("collect", XRP, "--since", format_utc(now - 3 * 3_600_000), *args)
        assert first.returncode == 0, first.stderr
        httpx.post(url + "/sim/delist", json={"market": XRP}).raise_for_status()
        again = cli("collect", XRP, "--since", format_utc(now - 6 * 3_600_000), *args)
        never = cli("collect", "KRW-HUNT", "--since", format_utc(now - 3_600_000), *args)
    assert again.returncode == 3, again.stderr
    assert f"{XRP} is no longer listed upstream (delisted)" in again.stderr
    assert "Traceback" not in again.stderr and "404" not in again.stderr
    assert never.returncode == 2 and "delisted before anything was collected" in never.stderr
    out = tmp_path / "xrp.csv"
    exported = cli(
        "export", XRP, "-t", "1m", "--since", format_utc(now - 3 * 3_600_000),
        "--db", db, "--out", str(out),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert len(out.read_text().splitlines()) > 150  # header + about 180 minutes
    status = cli("status", "--db", db, "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    (gone,) = document["delisted"]
    # seen at upstream's clock, which the client knows to the second
    assert gone["market"] == XRP and gone["seen"][:16] == format_utc(now)[:16]
    last = max(s["last"] for s in document["series"] if s["market"] == XRP)
    assert last <= gone["last_trade"] < format_utc(now) + "Z"
    assert all(s["delisted"] == (s["market"] == XRP) for s in document["series"])
    table = cli("status", "--db", db)
    assert f"{XRP}: delisted" in table.stdout and gone["last_trade"] in table.stdout


async def test_markets_carry_warnings_and_caution_flags(spine: Spine) -> None:
    markets = {m.market: m for m in await spine.markets()}
    assert markets["KRW-META"].warning and markets["KRW-META"].caution["PRICE_FLUCTUATIONS"]
    assert markets["KRW-SAND"].caution["TRADING_VOLUME_SOARING"]
    assert not markets["KRW-SAND"].warning and not any(markets[BTC].caution.values())
    assert "KRW-HUNT" not in markets  # delisted in the seeded past, nothing stored
    assert "KRW-HUNT" not in {m.market for m in await spine.markets(include_delisted=True)}
