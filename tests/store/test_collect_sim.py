"""The collector against the simulator (in-process): stored set == upstream set, exactly.

The oracle is the simulator's REST answer fetched naively: the range is cut into chunks of
at most 200 windows, one ``count=200`` request each, so no chunk can hide a candle. The
collector under test pages backwards over gaps left by prior coverage instead.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import InFlight, ManualClock, UnpacedBudget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketspine import parse_timeframe
from marketspine._base.time import DAY_MS, format_utc, parse_time
from marketspine._base.timeframes import TIMEFRAMES, Timeframe
from marketspine._client.client import Client
from marketspine._store.backfill import collect
from marketspine._store.pipeline import DEFAULT_DEPTH
from marketspine._store.planner import MAX_PAGE, ceil_window, plan_gaps
from marketspine._store.sqlite import SQLiteStore
from marketspine._upbit.horizon import served_since
from marketspine._upbit.rest import decode_candles
from marketspine.records import Candle
from marketspine.sim import SimConfig, create_app

# A fixed simulated "now", after the youngest markets of the default universe were listed.
NOW = parse_time("2026-11-20T12:34:56.789Z")


@dataclass
class Sim:
    """An in-process simulator, a marketspine Client on it, and a plain httpx for oracles."""

    clock: ManualClock
    http: httpx.AsyncClient
    client: Client
    dense: list[str]
    sparse: list[str]
    young: list[str]

    async def candle_requests(self) -> int:
        stats = (await self.http.get("/sim/stats")).json()
        return int(stats["requests"]["by_group"].get("candles", 0))

    async def total_requests(self) -> int:
        return int((await self.http.get("/sim/stats")).json()["requests"]["total"])

    async def truth(self, market: str, tf: Timeframe, start: int, end: int) -> list[Candle]:
        """Every candle starting in ``[start, end)`` (aligned), by ≤200-window chunks."""
        found: list[Candle] = []
        low = start
        while low < end:
            high = min(tf.shift(low, MAX_PAGE), end)
            params = {"market": market, "count": "200", "to": format_utc(high) + "Z"}
            response = await self.http.get(tf.rest_path, params=params)
            response.raise_for_status()
            found += [c for c in decode_candles(response.content, tf) if c.start_ms >= low]
            low = high
        return sorted(found, key=lambda c: c.start_ms)


_KINDS: dict[str, list[str]] = {}  # market kinds, found once per test session


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    clock = ManualClock(NOW)
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://sim") as http,
        Client("http://sim", transport=transport, budget=UnpacedBudget()) as client,
    ):
        if not _KINDS:
            _KINDS.update(await classify(http))
        yield Sim(clock, http, client, _KINDS["dense"], _KINDS["sparse"], _KINDS["young"])


async def classify(http: httpx.AsyncClient) -> dict[str, list[str]]:
    """Markets by liquidity (span of 200 one-minute candles) and age (< 200 day candles)."""
    kinds: dict[str, list[str]] = {"dense": [], "sparse": [], "young": []}
    one_minute, one_day = parse_timeframe("1m"), parse_timeframe("1d")
    for row in (await http.get("/v1/market/all")).json():
        market = row["market"]
        minutes = await sim_page(http, market, one_minute, NOW)
        span = (minutes[0].start_ms - minutes[-1].start_ms) // 60_000 + 1
        if span <= 205:
            kinds["dense"].append(market)
        elif span > 5_000:
            kinds["sparse"].append(market)
        if len(await sim_page(http, market, one_day, NOW)) < 200:
            kinds["young"].append(market)
    assert all(kinds.values()), f"the default universe has every kind of market: {kinds}"
    return kinds


async def sim_page(http: httpx.AsyncClient, market: str, tf: Timeframe, to: int) -> list[Candle]:
    params = {"market": market, "count": "200", "to": format_utc(to) + "Z"}
    return decode_candles((await http.get(tf.rest_path, params=params)).content, tf)


def fresh_store() -> tuple[tempfile.TemporaryDirectory[str], SQLiteStore]:
    folder = tempfile.TemporaryDirectory()
    return folder, SQLiteStore(Path(folder.name) / "db.sqlite")


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, int, int, list[tuple[int, int]]]:
    kind = draw(st.sampled_from(["dense", "sparse", "young"]))
    name = draw(st.sampled_from([n for n in TIMEFRAMES if n != "1s"] + ["1s"] * 2))
    tf = parse_timeframe(name)
    windows = draw(st.integers(1, 1200 if tf.unit in ("minute", "second") else 300))
    back = draw(st.integers(-3, 2 * windows))  # may reach into the forming window
    end = tf.shift(tf.floor(NOW), -back) + draw(st.sampled_from([0, 1, 1000]))
    if name == "1s" and draw(st.booleans()):
        end -= draw(st.integers(80, 100)) * DAY_MS  # around Upbit's ~3-month horizon
    start = tf.shift(tf.floor(end), -windows) + draw(st.sampled_from([0, 1]))
    priors = draw(st.lists(st.tuples(st.integers(0, windows), st.integers(0, windows)), max_size=2))
    prior = [
        (tf.shift(tf.floor(start), a), tf.shift(tf.floor(start), b)) for a, b in priors if a < b
    ]
    return kind, name, start, end, prior


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=requests(), pick=st.integers(0, 100))
async def test_stored_set_equals_the_simulators_answer_within_the_call_bound(
    sim: Sim, request: tuple[str, str, int, int, list[tuple[int, int]]], pick: int
) -> None:
    kind, name, since, until, prior = request
    pool = {"dense": sim.dense, "sparse": sim.sparse, "young": sim.young}[kind]
    market = pool[pick % len(pool)]
    tf = parse_timeframe(name)
    folder, store = fresh_store()
    async with store:
        for low, high in prior:  # earlier partial runs
            await collect(sim.client, store, [market], tf, since_ms=low, until_ms=high, now_ms=NOW)
        gaps = plan_gaps(await store.coverage(market, tf), tf, since, until, NOW)
        before = await sim.candle_requests()
        await collect(sim.client, store, [market], tf, since_ms=since, until_ms=until, now_ms=NOW)
        calls = await sim.candle_requests() - before

        start, end = ceil_window(tf, since), min(ceil_window(tf, until), tf.floor(NOW))
        stored = await store.read(market, tf, start, max(start, end))
        assert stored == (await sim.truth(market, tf, start, end) if start < end else [])
        assert all(tf.is_closed(c.start_ms, NOW) for c in await store.read(market, tf, 0, 2 * NOW))
        bound = 0
        for low, high in gaps:
            bound += math.ceil(len(await sim.truth(market, tf, low, high)) / MAX_PAGE) + 1
        listing = await store.listing(market, tf)
        if listing is not None and listing >= start:
            bound += DEFAULT_DEPTH - 1  # dense pages asked ahead may reach below a listing
        assert calls <= bound

        before = await sim.total_requests()
        await collect(sim.client, store, [market], tf, since_ms=since, until_ms=until, now_ms=NOW)
        assert await sim.total_requests() == before, "a covered closed range costs 0 calls"
    folder.cleanup()


async def test_pages_of_one_market_are_in_flight_together_and_stored_exactly(sim: Sim) -> None:
    """The pipelined backfill at the simulator (answers taking 5 ms): several pages of a dense
    market in flight at once, a sparse one walked; the stored candles and coverage those of
    the simulator either way."""
    app = InFlight(create_app(SimConfig(rate_limit=0, latency_ms=5), clock=sim.clock))
    tf = parse_timeframe("1m")
    end = tf.floor(NOW)
    transport = httpx.ASGITransport(app=app)
    folder, store = fresh_store()
    async with store, Client("http://sim", transport=transport, budget=UnpacedBudget()) as client:
        for market, windows in ((sim.dense[0], 3_000), (sim.sparse[0], 400_000)):
            start = tf.shift(end, -windows)
            app.most = 0
            summary = await collect(
                client, store, [market], tf, since_ms=start, until_ms=end, now_ms=NOW
            )
            truth = await sim.truth(market, tf, start, end)
            assert await store.read(market, tf, start, end) == truth
            assert (await store.coverage(market, tf)).contains(start, end)
            assert summary.candles_written == len(truth)
            pages = math.ceil(len(truth) / MAX_PAGE)
            if market in sim.dense:  # pages asked ahead, exactly the walk's
                assert app.most > 1 and summary.upstream_calls == pages == 15
            else:  # 200 candles over thousands of windows: walked one page at a time
                assert app.most == 1 and summary.upstream_calls <= pages + 1
    folder.cleanup()


async def test_middle_hole_is_repaired_with_the_fewest_calls(sim: Sim) -> None:
    market, tf = sim.dense[0], parse_timeframe("1m")
    end = tf.floor(NOW)
    start = tf.shift(end, -1000)
    folder, store = fresh_store()
    async with store:
        await collect(sim.client, store, [market], tf, since_ms=start, until_ms=end, now_ms=NOW)
        hole = (tf.shift(start, 300), tf.shift(start, 650))
        # Lose the middle (as if an older version had never fetched it).
        await _forget(store, market, tf, hole)
        assert (await store.coverage(market, tf)).gaps(start, end) == [hole]
        before = await sim.candle_requests()
        await collect(sim.client, store, [market], tf, since_ms=start, until_ms=end, now_ms=NOW)
        assert await sim.candle_requests() - before == 2  # 350 dense windows: 200 + 150
        assert await store.read(market, tf, start, end) == await sim.truth(market, tf, start, end)
    folder.cleanup()


async def _forget(store: SQLiteStore, market: str, tf: Timeframe, hole: tuple[int, int]) -> None:
    import sqlite3

    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "DELETE FROM candles WHERE market=? AND timeframe=? AND start_ms>=? AND start_ms<?",
            (market, tf.key, *hole),
        )
        ranges = (await store.coverage(market, tf)).subtract(*hole).ranges
        conn.execute("DELETE FROM coverage WHERE market=? AND timeframe=?", (market, tf.key))
        conn.executemany(
            "INSERT INTO coverage VALUES (?,?,?,?)", [(market, tf.key, a, b) for a, b in ranges]
        )


async def test_backfill_stops_at_listing_and_records_it(sim: Sim) -> None:
    market, tf = sim.young[0], parse_timeframe("1d")
    since = parse_time("2017-01-01")
    folder, store = fresh_store()
    async with store:
        before = await sim.candle_requests()
        summary = await collect(
            sim.client, store, [market], tf, since_ms=since, until_ms=NOW, now_ms=NOW
        )
        assert await sim.candle_requests() - before == 1
        stored = await store.read(market, tf, since, NOW)
        assert stored == await sim.truth(market, tf, since, tf.floor(NOW))
        listing = await store.listing(market, tf)
        assert listing == stored[0].start_ms == summary.per_market[0].listing_ms
        # Anything before the listing is known empty: no call, however far back.
        before = await sim.total_requests()
        await collect(sim.client, store, [market], tf, since_ms=0, until_ms=listing, now_ms=NOW)
        assert await sim.total_requests() == before
    folder.cleanup()


async def test_seconds_beyond_the_horizon_are_unserved_not_empty(sim: Sim) -> None:
    """Two days of seconds across Upbit's ~90-day horizon: the part upstream surely serves
    is collected and covered; the older part is reported as unserved, never asked for and
    never recorded as covered (it would read as "no trades")."""
    market, tf = sim.dense[0], parse_timeframe("1s")
    served_from = served_since(tf, NOW)
    assert served_from is not None and served_from > NOW - 90 * DAY_MS
    until = served_from + 600_000
    since = until - 2 * DAY_MS
    folder, store = fresh_store()
    async with store:
        before = await sim.candle_requests()
        summary = await collect(
            sim.client, store, [market], tf, since_ms=since, until_ms=until, now_ms=NOW
        )
        calls = await sim.candle_requests() - before
        assert summary.unserved == (since, served_from)
        wanted = await store.read(market, tf, served_from, until)
        assert wanted == await sim.truth(market, tf, served_from, until)
        assert calls <= math.ceil(len(wanted) / MAX_PAGE) + 1
        # A whole last page is kept, a little below served_from, but never a claim older
        # than what upstream actually answered.
        stored = await store.read(market, tf, since, until)
        coverage = await store.coverage(market, tf)
        assert coverage.contains(served_from, until)
        assert coverage.ranges[0][0] >= stored[0].start_ms >= NOW - 90 * DAY_MS
        assert await store.listing(market, tf) is None  # the horizon is not a listing
        # Wholly beyond the horizon: nothing asked, nothing covered, all of it unserved.
        before = await sim.candle_requests()
        older = await collect(
            sim.client, store, [market], tf, since_ms=since - DAY_MS, until_ms=since, now_ms=NOW
        )
        assert older.unserved == (since - DAY_MS, since) and older.upstream_calls == 0
        assert await sim.candle_requests() == before
        assert (await store.coverage(market, tf)).gaps(since - DAY_MS, since) != []
    folder.cleanup()


async def test_minutes_and_months_side_by_side_from_upstream(sim: Sim) -> None:
    market = sim.dense[0]
    minute, month = parse_timeframe("1m"), parse_timeframe("1M")
    since = parse_time("2025-01-01")
    folder, store = fresh_store()
    async with store:
        await collect(sim.client, store, [market], month, since_ms=since, until_ms=NOW, now_ms=NOW)
        end = minute.floor(NOW)
        await collect(
            sim.client, store, [market], minute, since_ms=end - 3_600_000, until_ms=end, now_ms=NOW
        )
        # Full pages keep what lies before `since` too; the asked ranges must be exact.
        months = await store.read(market, month, since, 2 * NOW)
        minutes = await store.read(market, minute, end - 3_600_000, 2 * NOW)
        assert months == await sim.truth(market, month, since, month.floor(NOW))
        assert minutes == await sim.truth(market, minute, end - 3_600_000, end)
        assert {c.timeframe for c in months} == {"1M"}
        assert {c.timeframe for c in minutes} == {"1m"}
    folder.cleanup()


async def test_the_forming_candle_is_stored_only_once_closed(sim: Sim) -> None:
    market, tf = sim.dense[0], parse_timeframe("5m")
    forming = tf.floor(NOW)
    folder, store = fresh_store()
    async with store:
        since, until = forming - 3_600_000, forming + 3_600_000
        await collect(sim.client, store, [market], tf, since_ms=since, until_ms=until, now_ms=NOW)
        assert await store.read(market, tf, forming, until) == []
        assert not (await store.coverage(market, tf)).contains(forming, forming + 1)
        after = tf.next_start(forming)
        forming_now = (await sim_page(sim.http, market, tf, after))[0]
        assert forming_now.start_ms == forming
        try:
            sim.clock.ms = NOW + 10 * 60_000  # the window has closed upstream
            later = sim.clock.ms
            await collect(
                sim.client, store, [market], tf, since_ms=since, until_ms=until, now_ms=later
            )
            closed = await store.read(market, tf, forming, after)
            assert closed == await sim.truth(market, tf, forming, after)
            assert len(closed) == 1 and closed[0] != forming_now  # final, not the partial one
        finally:
            sim.clock.ms = NOW
    folder.cleanup()
