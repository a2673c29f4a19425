"""Spine answers from memory, the store or upstream — exactly, and with one upstream call per
missing page at most. Runs against the simulator in-process (live clock)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SIM_NOW_MS

from marketspine import InvalidRequestError, UnknownMarketError
from marketspine._base.time import format_utc, parse_naive_utc, parse_time
from marketspine._base.timeframes import TIMEFRAMES, parse_timeframe
from marketspine._spine.quotes import Channel
from marketspine._spine.spine import Spine
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Candle
from marketspine.sim import SimConfig, create_app

DAY = 86_400_000


@pytest.fixture
def app() -> Any:
    return create_app(SimConfig(seed=3, rate_limit=0))


@pytest.fixture
async def spine(app: Any, tmp_path: Path) -> AsyncIterator[Spine]:
    async with Spine(
        "http://sim", tmp_path / "spine.db", transport=httpx.ASGITransport(app=app)
    ) as s:
        yield s


async def sim_requests(app: Any, group: str | None = None) -> int:
    """Requests the simulator has served (of one rate-limit group, or all)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as c:
        stats = (await c.get("/sim/stats")).json()
    return int(sum(v for k, v in stats["requests"]["by_group"].items() if group in (None, k)))


async def rest_range(app: Any, market: str, tf_name: str, since: int, until: int) -> list[Candle]:
    """The simulator's REST answer for windows starting in [since, until), ascending."""
    tf = parse_timeframe(tf_name)
    rows: list[dict[str, Any]] = []
    to = until
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as c:
        while True:
            page = (
                await c.get(
                    tf.rest_path,
                    params={"market": market, "count": 200, "to": format_utc(to) + "Z"},
                )
            ).json()
            rows.extend(r for r in page if parse_naive_utc(r["candle_date_time_utc"]) >= since)
            if len(page) < 200 or parse_naive_utc(page[-1]["candle_date_time_utc"]) < since:
                break
            to = parse_naive_utc(page[-1]["candle_date_time_utc"])
    return [
        Candle(
            market,
            tf.name,
            parse_naive_utc(r["candle_date_time_utc"]),
            r["opening_price"],
            r["high_price"],
            r["low_price"],
            r["trade_price"],
            r["candle_acc_trade_volume"],
            r["candle_acc_trade_price"],
            r["timestamp"],
        )
        for r in reversed(rows)
    ]


async def test_range_is_exact_and_a_repeat_costs_nothing(spine: Spine, app: Any) -> None:
    since, until = parse_time("2025-03-01"), parse_time("2025-03-04T07:00:00")
    first = await spine.candles("KRW-BTC", "1h", start=since, end=until)
    assert list(first) == await rest_range(app, "KRW-BTC", "1h", since, until)
    assert first.meta.upstream_calls == 1 and "upstream" in first.meta.sources
    before = await sim_requests(app)
    again = await spine.candles("KRW-BTC", "1h", start="2025-03-01", end="2025-03-04T07:00:00")
    assert list(again) == list(first)
    assert again.meta.upstream_calls == 0 and again.meta.source == "memory"
    assert await sim_requests(app) == before


async def test_count_ends_with_the_forming_candle(spine: Spine, app: Any) -> None:
    result = await spine.candles("KRW-BTC", "1m", count=450)
    assert len(result) == 450
    now_minute = spine.client.upstream_now_ms() // 60_000 * 60_000
    if result.meta.forming:
        assert result[-1].start_ms >= now_minute - 60_000
    else:  # the first second of a minute may have no trade yet: no forming candle exists
        assert result[-1].start_ms < now_minute
    starts = [c.start_ms for c in result]
    assert starts == sorted(set(starts))
    # The newest page (the forming candle and the closed ones before it) and the pages below
    # it: ceil(450 / 200) = 3 calls, or one more when the head page's closed part fell short
    # (a window that closed while it was on its way is asked again). Never above N/200 + 1.
    assert 3 <= result.meta.upstream_calls <= 3 + 1
    repeat = await spine.candles("KRW-BTC", "1m", count=450)
    assert repeat.meta.upstream_calls <= 2  # the forming candle, plus a page if a minute closed
    closed = await spine.candles("KRW-BTC", "1m", count=100, closed_only=True)
    assert not closed.meta.forming and closed.meta.upstream_calls <= 1
    newest_closed = result[-2] if result.meta.forming else result[-1]
    assert closed[-1].start_ms >= newest_closed.start_ms  # a minute may have closed meanwhile
    assert closed[-1].start_ms < now_minute + 60_000


async def test_sparse_market_count_spans_many_windows(spine: Spine, app: Any) -> None:
    markets = await spine.markets()
    sparse = markets[-1].market
    result = await spine.candles(sparse, "1m", count=50, closed_only=True)
    assert 0 < len(result) <= 50
    span = result[-1].start_ms - result[0].start_ms
    assert span > 50 * 60_000 or len(result) < 50  # gaps between existing candles


async def test_derived_from_stored_minutes_without_upstream(spine: Spine, app: Any) -> None:
    since, until = parse_time("2025-05-05T00:00:00"), parse_time("2025-05-05T06:00:00")
    await spine.candles("KRW-ETH", "1m", start=since, end=until)
    for name in ("5m", "15m", "1h"):
        before = await sim_requests(app)
        derived = await spine.candles("KRW-ETH", name, start=since, end=until)
        assert derived.meta.upstream_calls == 0
        assert await sim_requests(app) == before
        upstream = await rest_range(app, "KRW-ETH", name, since, until)
        assert [(c.start_ms, c.open, c.high, c.low, c.close) for c in derived] == [
            (c.start_ms, c.open, c.high, c.low, c.close) for c in upstream
        ]
        for mine, theirs in zip(derived, upstream, strict=True):
            assert mine.volume == pytest.approx(theirs.volume, rel=1e-9)
            assert mine.value == pytest.approx(theirs.value, rel=1e-9)


async def test_concurrent_requests_share_pages(spine: Spine, app: Any) -> None:
    since, until = parse_time("2024-06-01"), parse_time("2024-06-02T16:00:00")
    await spine.markets()  # the market list is not a page
    before = await sim_requests(app, "candles")
    results = await asyncio.gather(
        *[spine.candles("KRW-XRP", "5m", start=since, end=until) for _ in range(40)],
        *[spine.candles("KRW-ETH", "1h", start=since, end=until) for _ in range(40)],
    )
    made = await sim_requests(app, "candles") - before
    windows_5m = (until - since) // 300_000  # 480 windows -> 3 pages
    assert made == -(-windows_5m // 200) + 1  # plus one 1h page
    assert all(list(r) == list(results[0]) for r in results[:40])


async def test_tickers_rest_cache_and_quote(spine: Spine, app: Any) -> None:
    before = await sim_requests(app)
    one = await spine.ticker("KRW-BTC", max_age_s=60)
    two = await spine.ticker("KRW-BTC", max_age_s=60)
    assert one == two and await sim_requests(app) == before + 1
    krw = await spine.tickers(quote="KRW")
    assert krw and all(t.market.startswith("KRW-") for t in krw)
    with pytest.raises(UnknownMarketError):
        await spine.ticker("KRW-NOPE", channel=Channel.REST_ONLY)


async def test_bad_arguments(spine: Spine) -> None:
    with pytest.raises(InvalidRequestError, match="not both"):
        await spine.candles("KRW-BTC", "1m", count=5, start="2024-01-01")
    with pytest.raises(InvalidRequestError, match="end needs a start or a count"):
        await spine.candles("KRW-BTC", "1m", end="2024-01-01")
    with pytest.raises(InvalidRequestError, match="unknown timeframe"):
        await spine.candles("KRW-BTC", "7m", count=5)
    with pytest.raises(InvalidRequestError, match="QUOTE-BASE"):
        await spine.candles("BTC", "1m", count=5)
    with pytest.raises(UnknownMarketError):
        await spine.candles("KRW-NOPE", "1m", start="2024-01-01", end="2024-01-02")
    assert spine.tick_size("KRW-BTC", 100_000_000) == 1000


async def test_served_stale_from_the_store_while_the_circuit_is_open(
    app: Any, tmp_path: Path
) -> None:
    from marketspine import RetryLaterError
    from marketspine._client.retry import RetryPolicy

    retry = RetryPolicy(attempts=1)
    async with Spine(
        "http://sim", tmp_path / "stale.db", retry=retry, transport=httpx.ASGITransport(app=app)
    ) as spine:
        since, until = parse_time("2025-01-01"), parse_time("2025-01-03")
        stored = await spine.candles("KRW-BTC", "1h", start=since, end=until)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sim"
        ) as http:
            await http.post("/sim/faults", json={"error_rate": 1.0})
        # Ask for more than is stored (the full page reached 200 hours back, so ask 30 days):
        # upstream fails until the breaker opens, then the stored part is served at once,
        # flagged stale.
        result = None
        for _ in range(20):
            spine.clear_memory()  # no memory: the store must answer
            try:
                result = await spine.candles("KRW-BTC", "1h", start=since - 30 * DAY, end=until)
            except RetryLaterError:
                continue
            break
        assert result is not None and result.meta.stale
        # what the store holds: the asked two days and the rest of their full page
        assert len(result) == 200 and list(result)[-len(stored) :] == list(stored)


async def test_nothing_held_and_upstream_unable_raises_never_an_empty_answer(
    app: Any, tmp_path: Path
) -> None:
    # Upstream answers every request with a 5xx and nothing is stored: an empty answer would
    # say "no candles there". Each read raises the failure (it used to return [] marked stale).
    from marketspine import RetryLaterError
    from marketspine._client.retry import RetryPolicy

    async with Spine(
        "http://sim",
        tmp_path / "empty.db",
        retry=RetryPolicy(attempts=1),
        transport=httpx.ASGITransport(app=app),
    ) as spine:
        await spine.ticker("KRW-ETH")  # upstream's clock known, no candle held
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sim"
        ) as http:
            await http.post("/sim/faults", json={"error_rate": 1.0})
        reads = [
            {"count": 5},
            {"count": 5, "end": "2025-01-02"},
            {"start": "2025-01-01", "end": "2025-01-02"},
        ]
        for read in reads:
            with pytest.raises(RetryLaterError) as raised:
                await spine.candles("KRW-BTC", "1h", **read)  # type: ignore[arg-type]
            assert re.match(r"GET /v1/\S+ (failed|not sent)", str(raised.value)), read
        # A preload holds the series hot all the same (none held yet), as it did.
        assert await spine.preload({"KRW-BTC": {"1h": 10}}) == {"KRW-BTC": {"1h": 0}}


async def test_fill_adds_flat_candles_for_windows_without_trades(spine: Spine) -> None:
    markets = await spine.markets()
    sparse = markets[-1].market  # trades every few hours
    since, until = parse_time("2026-06-01"), parse_time("2026-06-02")
    plain = await spine.candles(sparse, "1h", start=since, end=until)
    filled = await spine.candles(sparse, "1h", start=since, end=until, fill=True)
    assert len(plain) < 24 and plain
    starts = [c.start_ms for c in filled]
    assert starts == list(range(plain[0].start_ms, until, 3_600_000))
    real = {c.start_ms: c for c in plain}
    for candle, previous in zip(filled[1:], filled, strict=False):
        if candle.start_ms not in real:
            assert candle.volume == 0 and candle.open == candle.close == previous.close


async def test_hundred_concurrent_mixed_requests_one_call_per_missing_page(
    spine: Spine, app: Any
) -> None:
    await spine.markets()
    base = parse_time("2024-09-01")
    ranges = [(base + i * 86_400_000, base + (i + 1) * 86_400_000) for i in range(5)]
    before = await sim_requests(app, "candles")
    calls = [
        spine.candles(market, "1h", start=a, end=b)
        for market in ("KRW-BTC", "KRW-ETH")
        for a, b in ranges
        for _ in range(10)
    ]
    results = await asyncio.gather(*calls)
    assert len(results) == 100
    # one page per distinct (market, day): 24 hourly windows fit in one page each
    assert await sim_requests(app, "candles") - before == 2 * len(ranges)


async def test_warmup_refreshes_on_its_schedule(app: Any, tmp_path: Path) -> None:
    async with Spine(
        "http://sim", tmp_path / "w.db", warmup_every_s=0.05, transport=httpx.ASGITransport(app=app)
    ) as spine:
        await spine.warmup()
        first = await sim_requests(app, "market")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await sim_requests(app, "market") < first + 2:
            assert loop.time() < deadline, "the scheduled warmup never ran"
            await asyncio.sleep(0.02)


async def test_forming_candle_judged_by_upstream_clock_not_the_local_one(
    sim_clock: Any, tmp_path: Path
) -> None:
    # Upstream's clock stands months behind this machine's (a local clock running fast):
    # its forming minute must still be served as forming, and never stored as closed.
    app = create_app(SimConfig(seed=3, rate_limit=0), clock=sim_clock)
    forming = parse_timeframe("1m").floor(sim_clock())
    async with Spine(
        "http://sim", tmp_path / "skew.db", transport=httpx.ASGITransport(app=app)
    ) as spine:
        closed = await spine.candles("KRW-BTC", "1m", count=5, closed_only=True)
        assert [c.start_ms for c in closed] == [forming - k * 60_000 for k in range(5, 0, -1)]
        latest = await spine.candles("KRW-BTC", "1m", count=5)
        assert latest.meta.forming and latest[-1].start_ms == forming
    async with SQLiteStore(tmp_path / "skew.db") as store:
        stored = await store.read("KRW-BTC", parse_timeframe("1m"), 0, forming + 86_400_000)
    assert stored and max(c.start_ms for c in stored) < forming


async def test_preloaded_windows_stay_hot_when_the_local_clock_runs_fast(
    sim_clock: Any, tmp_path: Path
) -> None:
    # This machine's clock runs 90 days ahead of upstream's (and keeps pace with it): the
    # keeper must still refresh on upstream's closes, not wait for the local clock's.
    app = create_app(SimConfig(seed=3, rate_limit=0), clock=sim_clock)
    minute = parse_timeframe("1m")
    async with Spine(
        "http://sim",
        tmp_path / "fast.db",
        transport=httpx.ASGITransport(app=app),
        wall_ms=lambda: sim_clock() + 90 * 86_400_000,
    ) as spine:
        await spine.preload({"KRW-BTC": {"1m": 5}})
        first = await spine.candles("KRW-BTC", "1m", count=5, closed_only=True)
        assert first.meta.source == "memory"
        assert first[-1].start_ms == minute.floor(sim_clock()) - 60_000
        sim_clock.advance(2 * 60_000)
        newest = minute.floor(sim_clock()) - 60_000
        deadline = asyncio.get_running_loop().time() + 20
        while (spine._memory.covered(("KRW-BTC", minute.key)) or (0, 0))[1] <= newest:
            assert asyncio.get_running_loop().time() < deadline, "the keeper never refreshed"
            await asyncio.sleep(0.02)
        later = await spine.candles("KRW-BTC", "1m", count=5, closed_only=True)
    assert later.meta.source == "memory" and later[-1].start_ms == newest


async def test_using_spine_or_client_unopened_raises_the_same_error_type() -> None:
    from marketspine import ClosedError
    from marketspine._client.client import Client

    with pytest.raises(ClosedError, match="not open"):
        await Spine("http://sim", ":memory:").candles("KRW-BTC", "1m", count=1)
    with pytest.raises(ClosedError, match="not open"):
        await Client("http://sim").candles("KRW-BTC", "1m", count=1)
    with pytest.raises(ClosedError, match="not open"):
        await Spine("http://sim", ":memory:").watch(["ticker"], ["KRW-BTC"])


async def test_malformed_upstream_json_is_an_upstream_fault_not_a_bad_request() -> None:
    from marketspine import UpstreamError
    from marketspine._client.client import Client

    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>maintenance</html>")

    async with Client("http://sim", transport=httpx.MockTransport(garbage)) as client:
        with pytest.raises(UpstreamError, match="malformed Upbit candle JSON"):
            await client.candles("KRW-BTC", "1m", count=1)
        with pytest.raises(UpstreamError, match="malformed Upbit ticker JSON"):
            await client.tickers(["KRW-BTC"])


async def test_a_quiet_markets_last_candle_is_not_current_and_fill_reaches_now_on_request(
    sim_spine: Spine,
) -> None:
    # Field notes: a quiet market's last candle is not "current"; filling forward to now is
    # asked for, never done behind the caller's back.
    minute = TIMEFRAMES["1m"]
    now_window = minute.floor(SIM_NOW_MS)
    plain = await sim_spine.candles("KRW-AHT", "1m", count=5)  # a few trades a day
    assert plain[-1].start_ms < minute.shift(now_window, -5)  # its last trade: minutes ago
    assert not plain.meta.forming  # nothing claims to be the window now forming
    filled = await sim_spine.candles("KRW-AHT", "1m", count=5, fill=True)
    closed_windows = [minute.shift(now_window, -k) for k in range(5, 0, -1)]
    assert [c.start_ms for c in filled] == closed_windows  # up to now, windows without trades
    assert all(c.volume == 0 and c.open == c.close == plain[-1].close for c in filled)
    assert not filled.meta.forming
