"""How a candle read fetches what is missing: stored candles are answered while another
request's upstream fetch of the same series is held open (the series lock covers the fetch
alone), and a cold ``count`` read sends the pages after its first together — the same
candles as the page-by-page walk, around windows without trades too, within
ceil(count/200) + 1 calls. In-process simulator on a fixed clock."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SIM_NOW_MS, ManualClock, PageHold, wait_until

from marketspine._base.timeframes import parse_timeframe
from marketspine._client.client import Client
from marketspine._spine.spine import Spine
from marketspine.records import Candle
from marketspine.sim import SimConfig, create_app

HOUR = 3_600_000


class InFlight:
    """The simulator with its candle requests counted while in flight. Until two have been
    in flight at once, each page (a request with ``to``) waits for a second one (at most
    ``alone_s``): pages sent together then overlap whatever the machine's load, and pages
    sent one after another never do. The first ``lead`` pages pass at once (a read from an
    end asks its first page alone, to learn the density)."""

    def __init__(self, app: Any, alone_s: float = 10.0, lead: int = 0) -> None:
        self.app = app
        self.alone_s = alone_s
        self.lead = lead
        self.now = 0
        self.most = 0
        self.calls = 0
        self._company = asyncio.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/candles/"):
            await self.app(scope, receive, send)
            return
        self.calls += 1
        if b"to=" not in scope["query_string"] or self.most >= 2 or self.calls <= self.lead:
            await self.app(scope, receive, send)
            return
        async with self._company:
            self.now += 1
            self.most = max(self.most, self.now)
            self._company.notify_all()
            try:
                async with asyncio.timeout(self.alone_s):
                    await self._company.wait_for(lambda: self.most >= 2)
            except TimeoutError:
                pass
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _spine(app: Any, clock: ManualClock, db: Path) -> Spine:
    return Spine(
        "http://sim",
        db,
        transport=httpx.ASGITransport(app=app),
        wall_ms=clock,
        warmup_every_s=0,
    )


@pytest.fixture
async def held(clock: ManualClock, tmp_path: Path) -> AsyncIterator[tuple[Spine, PageHold]]:
    hold = PageHold(create_app(SimConfig(rate_limit=0), clock=clock))
    async with _spine(hold, clock, tmp_path / "held.db") as spine:
        yield spine, hold


async def test_a_stored_read_is_answered_while_a_fetch_of_its_series_is_held(
    held: tuple[Spine, PageHold],
) -> None:
    spine, hold = held
    stored_start, stored_end = SIM_NOW_MS - 100 * HOUR, SIM_NOW_MS - 10 * HOUR
    first = await spine.candles("KRW-BTC", "1h", start=stored_start, end=stored_end)
    latest = await spine.candles("KRW-BTC", "1h", count=150, closed_only=True)
    spine.clear_memory()  # the store answers from here on
    hold.held.clear()
    # Another request asks for history nobody holds: it fetches under the series lock.
    missing = asyncio.create_task(
        spine.candles("KRW-BTC", "1h", start=SIM_NOW_MS - 900 * HOUR, end=stored_start)
    )
    await wait_until(lambda: hold.waiting >= 1, 30, "the uncached page reached upstream")
    # Stored candles of the same series: a range and a count, both answered meanwhile.
    async with asyncio.timeout(30):
        again = await spine.candles("KRW-BTC", "1h", start=stored_start, end=stored_end)
        newest = await spine.candles("KRW-BTC", "1h", count=150, closed_only=True)
    assert not missing.done() and hold.waiting >= 1  # the fetch is still held
    assert list(again) == list(first) and again.meta.sources == ("database",)
    assert list(newest) == list(latest) and newest.meta.upstream_calls == 0
    hold.held.set()
    older = await missing
    assert older.meta.upstream_calls >= 1 and older[-1].start_ms < stored_start


async def test_a_fetch_of_the_newest_pages_is_not_held_behind_one_further_back(
    held: tuple[Spine, PageHold], clock: ManualClock
) -> None:
    spine, hold = held
    await spine.candles("KRW-BTC", "1m", count=300, closed_only=True)
    hold.before_ms = SIM_NOW_MS - 30 * 86_400_000
    hold.held.clear()
    backfill = asyncio.create_task(
        spine.candles("KRW-BTC", "1m", start=SIM_NOW_MS - 40 * 86_400_000, end=hold.before_ms)
    )
    await wait_until(lambda: hold.waiting >= 1, 30, "the backfill's page reached upstream")
    clock.advance(5 * 60_000)  # five minutes close: the newest page is missing now
    async with asyncio.timeout(30):
        newest = await spine.candles("KRW-BTC", "1m", count=300, closed_only=True)
    assert not backfill.done()
    assert newest.meta.upstream_calls >= 1 and len(newest) == 300
    assert newest[-1].start_ms == parse_timeframe("1m").floor(clock.ms) - 60_000
    hold.held.set()
    backfill.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await backfill


async def test_a_read_waiting_for_a_held_fetch_of_its_pages_fetches_nothing_again(
    held: tuple[Spine, PageHold],
) -> None:
    spine, hold = held
    start, end = SIM_NOW_MS - 600 * HOUR, SIM_NOW_MS - 100 * HOUR
    hold.held.clear()
    one = asyncio.create_task(spine.candles("KRW-ETH", "1h", start=start, end=end))
    await wait_until(lambda: hold.waiting >= 1, 30, "the first page reached upstream")
    two = asyncio.create_task(spine.candles("KRW-ETH", "1h", start=start, end=end))
    hold.held.set()
    first, second = await asyncio.gather(one, two)
    assert list(first) == list(second) and len(first) == 500
    assert second.meta.upstream_calls == 0  # it waited for the lock and found them stored


async def _newest(
    app: Any, clock: ManualClock, market: str, tf_name: str, n: int, to: int | None = None
) -> list[Candle]:
    """The ``n`` newest candles (before ``to``, if given) as the page-by-page walk finds
    them, ascending."""
    tf = parse_timeframe(tf_name)
    rows: list[Candle] = []
    transport = httpx.ASGITransport(app=app)
    async with Client("http://sim", transport=transport, wall_ms=clock) as client:
        while len(rows) < n:
            page = await client.candles(market, tf, count=200, to_ms=to)
            rows += page
            if len(page) < 200:
                break
            to = page[-1].start_ms
    return rows[:n][::-1]


@pytest.mark.parametrize(
    ("market", "tf_name"),
    [
        ("KRW-BTC", "1m"),  # dense: a candle every minute
        ("KRW-META", "1d"),  # illiquid (6 trades a day): days without a trade have no candle
    ],
)
async def test_a_cold_count_sends_the_remaining_pages_together(
    clock: ManualClock, tmp_path: Path, market: str, tf_name: str
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app)
    count = 1000
    async with _spine(flight, clock, tmp_path / "cold.db") as spine:
        result = await spine.candles(market, tf_name, count=count)
    assert flight.most >= 2, "the pages after the first went one at a time"
    assert flight.calls <= math.ceil(count / 200) + 1
    assert result.meta.upstream_calls == flight.calls
    assert list(result) == await _newest(app, clock, market, tf_name, count)
    if market == "KRW-META":  # the chain crossed windows without a candle
        tf = parse_timeframe(tf_name)
        assert tf.count_windows(result[0].start_ms, result[-1].start_ms + 1) > count


async def test_a_sparse_market_walks_within_the_calls_of_a_walk(
    clock: ManualClock, tmp_path: Path
) -> None:
    # KRW-AHT trades about 12 times a day, its activity swinging from day to day: pages
    # spread by a guess would leave holes, so it walks, page by page, within the bound.
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, alone_s=0.0)
    async with _spine(flight, clock, tmp_path / "sparse.db") as spine:
        result = await spine.candles("KRW-AHT", "1m", count=1000)
    assert flight.calls == 5  # the newest page (forming candle included) and four more
    assert list(result) == await _newest(app, clock, "KRW-AHT", "1m", 1000)


async def test_a_count_partly_stored_fetches_only_below_what_is_stored(
    clock: ManualClock, tmp_path: Path
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, alone_s=0.0)
    async with _spine(flight, clock, tmp_path / "part.db") as spine:
        await spine.candles("KRW-BTC", "1m", count=300)
        before = flight.calls
        flight.alone_s = 10.0
        spine.clear_memory()
        result = await spine.candles("KRW-BTC", "1m", count=1000)
    # The first read stored its two pages whole (399 closed minutes): the forming candle,
    # then three pages for the 600 minutes below them, sent together.
    assert before == 2 and flight.calls - before == 1 + 3
    assert flight.most >= 2
    assert list(result) == await _newest(app, clock, "KRW-BTC", "1m", 1000)


class LateReply:
    """The simulator, with the local clock jumping ``jump_ms`` while its reply to a request
    without ``to`` (the newest page) travels: upstream made the page before the jump."""

    def __init__(self, app: Any, clock: ManualClock, jump_ms: int) -> None:
        self.app, self.clock, self.jump_ms = app, clock, jump_ms

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        newest = scope["type"] == "http" and scope["path"].startswith("/v1/candles/")
        if newest and b"to=" not in scope["query_string"]:
            self.clock.advance(self.jump_ms)


async def test_the_window_forming_when_the_newest_page_was_made_is_never_stored(
    clock: ManualClock, tmp_path: Path
) -> None:
    minute = parse_timeframe("1m")
    forming = minute.floor(clock.ms)
    clock.ms = forming + 58_000  # upstream makes the page 2 s before the window closes
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    async with _spine(LateReply(app, clock, 5_000), clock, tmp_path / "late.db") as spine:
        # The local clock reads 3 s past the close when the reply lands; upstream's Date
        # header says the page was made before it.
        result = await spine.candles("KRW-BTC", "1m", count=300)
        assert result.meta.forming and result[-1].start_ms == forming
        coverage = await spine.store.coverage("KRW-BTC", minute)
        assert coverage.ranges and coverage.ranges[-1][1] <= forming
        assert await spine.store.read("KRW-BTC", minute, forming, forming + 60_000) == []


async def test_a_long_cold_count_goes_out_in_rounds_and_stays_exact(
    clock: ManualClock, tmp_path: Path
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, alone_s=0.0)
    count = 3000
    async with _spine(flight, clock, tmp_path / "long.db") as spine:
        result = await spine.candles("KRW-BTC", "1m", count=count)
    assert flight.calls <= math.ceil(count / 200) + 1
    assert list(result) == await _newest(app, clock, "KRW-BTC", "1m", count)


# -- count before an end (Upbit's count + to: serve's /v1 with ``to``, the admin chart's
# older pages) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "tf_name", "back_ms"),
    [
        ("KRW-BTC", "1m", 2 * 24 * HOUR),  # dense
        ("KRW-META", "1d", 30 * 24 * HOUR),  # illiquid: days without a trade have no candle
    ],
)
async def test_a_cold_count_before_an_end_sends_the_pages_after_its_first_together(
    clock: ManualClock, tmp_path: Path, market: str, tf_name: str, back_ms: int
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, lead=1)
    count, end = 1000, clock.ms - back_ms - 12_345  # inside a window: that window counts
    async with _spine(flight, clock, tmp_path / "before.db") as spine:
        result = await spine.candles(market, tf_name, count=count, end=end)
    assert flight.most >= 2, "the pages after the first went one at a time"
    # The end is over an hour back: no clock call, the +1 of the bound a margin for pages.
    assert flight.calls <= math.ceil(count / 200) + 1
    assert result.meta.upstream_calls == flight.calls and not result.meta.forming
    assert list(result) == await _newest(app, clock, market, tf_name, count, to=end)


async def test_a_sparse_count_before_an_end_walks_exactly(
    clock: ManualClock, tmp_path: Path
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, alone_s=0.0)
    end = clock.ms - 40 * 24 * HOUR
    async with _spine(flight, clock, tmp_path / "sparse-before.db") as spine:
        result = await spine.candles("KRW-AHT", "1m", count=700, end=end)
    assert flight.calls == 4  # 700 candles: four pages, the first at ``end``
    assert list(result) == await _newest(app, clock, "KRW-AHT", "1m", 700, to=end)


async def test_a_count_before_an_end_partly_stored_fetches_only_below_what_is_stored(
    clock: ManualClock, tmp_path: Path
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, alone_s=0.0)
    end = parse_timeframe("1m").floor(clock.ms - 5 * 24 * HOUR)
    async with _spine(flight, clock, tmp_path / "part-before.db") as spine:
        await spine.candles("KRW-BTC", "1m", count=200, end=end)
        spine.clear_memory()
        again = await spine.candles("KRW-BTC", "1m", count=200, end=end)
        assert flight.calls == 1 and again.meta.upstream_calls == 0
        result = await spine.candles("KRW-BTC", "1m", count=600, end=end)
    assert flight.calls == 1 + 2  # the 400 below the stored page: two pages
    assert list(result) == await _newest(app, clock, "KRW-BTC", "1m", 600, to=end)


async def test_a_count_before_an_end_past_the_forming_start_is_the_newest(
    clock: ManualClock, tmp_path: Path
) -> None:
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    async with _spine(app, clock, tmp_path / "future.db") as spine:
        later = await spine.candles("KRW-BTC", "1m", count=300, end=clock.ms + HOUR)
        newest = await spine.candles("KRW-BTC", "1m", count=300)
    assert later.meta.forming and list(later) == list(newest)


class Together:
    """The simulator, each candle page held until ``expect`` are in flight (at most
    ``alone_s``): ``most`` then tells how many a read sent in one round."""

    def __init__(self, app: Any, expect: int, alone_s: float = 10.0) -> None:
        self.app, self.expect, self.alone_s = app, expect, alone_s
        self.now = self.most = self.calls = 0
        self._company = asyncio.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/candles/"):
            await self.app(scope, receive, send)
            return
        self.calls += 1
        async with self._company:
            self.now += 1
            self.most = max(self.most, self.now)
            self._company.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.alone_s):
                    await self._company.wait_for(lambda: self.most >= self.expect)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


async def test_a_chart_paging_back_sends_its_older_page_in_one_round(
    clock: ManualClock, tmp_path: Path
) -> None:
    # The newer 1,000 minutes are stored: their density places all five pages below at
    # once, none asked alone to learn it.
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    flight = InFlight(app, alone_s=0.0)
    async with _spine(flight, clock, tmp_path / "chart.db") as spine:
        await spine.candles("KRW-BTC", "1m", count=1000, closed_only=True)
        spine.clear_memory()
        # From the bottom of what is stored: nothing below it is known.
        stored = (await spine.store.coverage("KRW-BTC", parse_timeframe("1m"))).ranges
        assert len(stored) == 1
        flight.app = together = Together(app, expect=5)
        older = await spine.candles("KRW-BTC", "1m", count=1000, end=stored[0][0])
    assert together.most == together.calls == 5, "the first page went alone"
    assert older.meta.upstream_calls == 5
    assert list(older) == await _newest(app, clock, "KRW-BTC", "1m", 1000, to=stored[0][0])
