"""The collector's own promises, against a small in-memory upstream (no simulator needed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from marketspine import UnknownMarketError, UpstreamError, parse_timeframe
from marketspine._base.time import parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._base.timeframes import Timeframe
from marketspine._budget.rules import Priority
from marketspine._store.backfill import CollectSummary, ProgressEvent, collect
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Candle

T0 = parse_time("2024-01-01")
MIN = parse_timeframe("1m")


@dataclass(frozen=True)
class Listed:
    market: str


@dataclass
class FakeUpstream:
    """Upbit's paging over fixed candle starts per market; fails the page at ``fail_at``."""

    starts: dict[str, list[int]]
    fail_at: int | None = None
    calls: list[tuple[str, int, int, Priority]] = field(default_factory=list)
    market_calls: int = 0

    async def markets(self) -> list[Listed]:
        self.market_calls += 1
        return [Listed(m) for m in self.starts]

    async def candles(
        self,
        market: str,
        timeframe: Timeframe | str,
        *,
        count: int = 200,
        to_ms: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Candle]:
        assert to_ms is not None and 1 <= count <= 200
        self.calls.append((market, to_ms, count, priority))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise UpstreamError("upstream answered 503 five times")
        tf = parse_timeframe(timeframe)
        older = sorted((s for s in self.starts[market] if s < to_ms), reverse=True)[:count]
        return [Candle(market, tf.name, s, 1.0, 2.0, 0.5, 1.5, 1.0, 1.5, s + 1) for s in older]


def dense(n: int) -> list[int]:
    return [MIN.shift(T0, i) for i in range(n)]


async def test_markets_run_concurrently_and_every_page_lands(tmp_path: Path) -> None:
    upstream = FakeUpstream({"KRW-BTC": dense(1000), "KRW-DOGE": dense(1000)[::7]})
    events: list[ProgressEvent] = []
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        summary = await collect(
            upstream,
            store,
            ["KRW-BTC", "krw-doge"],
            TF["1m"],
            since_ms=T0,
            until_ms=MIN.shift(T0, 1000),
            now_ms=MIN.shift(T0, 2000),
            progress=events.append,
        )
        btc = [c.start_ms for c in await store.read("KRW-BTC", TF["1m"], 0, 2 * T0)]
        doge = [c.start_ms for c in await store.read("KRW-DOGE", TF["1m"], 0, 2 * T0)]
    assert btc == dense(1000) and doge == dense(1000)[::7]
    assert summary.markets == ("KRW-BTC", "KRW-DOGE")
    assert summary.candles_written == 1000 + len(doge)
    assert summary.upstream_calls == len(upstream.calls) == 5 + 1
    assert {c[3] for c in upstream.calls} == {Priority.LOW}
    # the two markets interleave: KRW-DOGE's single page is not last
    assert [c[0] for c in upstream.calls].index("KRW-DOGE") < 5
    finals = [e for e in events if e.finished]
    assert {e.market for e in finals} == {"KRW-BTC", "KRW-DOGE"}
    btc_events = [e for e in events if e.market == "KRW-BTC"]
    assert [e.pages for e in btc_events] == [1, 2, 3, 4, 5]
    assert [e.position_ms for e in btc_events] == sorted(
        (e.position_ms for e in btc_events), reverse=True
    )
    assert btc_events[-1].done_ms == btc_events[-1].total_ms == 1000 * 60_000


async def test_unknown_market_fails_before_anything_is_stored(tmp_path: Path) -> None:
    upstream = FakeUpstream({"KRW-BTC": dense(10)})
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        with pytest.raises(UnknownMarketError, match="KRW-NOPE"):
            await collect(
                upstream,
                store,
                ["KRW-BTC", "KRW-NOPE"],
                TF["1m"],
                since_ms=T0,
                until_ms=MIN.shift(T0, 10),
                now_ms=MIN.shift(T0, 20),
            )
        # The list is asked together with the first pages: at most one page per market.
        assert sorted(c[0] for c in upstream.calls) in ([], ["KRW-BTC"], ["KRW-BTC", "KRW-NOPE"])
        assert await store.summary() == []


@dataclass
class SlowList(FakeUpstream):
    """A market list that answers only once a candle page has been asked (or after
    ``patience`` turns of the event loop without one)."""

    patience: int = 1000
    pages_before_list: int | None = None

    async def markets(self) -> list[Listed]:
        for _ in range(self.patience):
            if self.calls:
                break
            await asyncio.sleep(0)
        self.pages_before_list = len(self.calls)
        return await super().markets()


async def test_the_first_page_is_asked_with_the_market_list_not_after_it(tmp_path: Path) -> None:
    upstream = SlowList({"KRW-BTC": dense(1000)})
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        summary = await collect(
            upstream,
            store,
            ["KRW-BTC"],
            TF["1m"],
            since_ms=T0,
            until_ms=MIN.shift(T0, 1000),
            now_ms=MIN.shift(T0, 2000),
        )
        stored = [c.start_ms for c in await store.read("KRW-BTC", TF["1m"], 0, 2 * T0)]
    assert upstream.pages_before_list == 1  # one page (density unknown), asked before the list
    assert stored == dense(1000) and summary.upstream_calls == 5


async def test_a_delisted_market_held_in_the_store_stores_nothing_more(tmp_path: Path) -> None:
    upstream = FakeUpstream({"KRW-BTC": dense(400), "KRW-OLD": dense(400)})
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        await collect(
            upstream,
            store,
            ["KRW-OLD"],
            TF["1m"],
            since_ms=T0,
            until_ms=MIN.shift(T0, 100),
            now_ms=MIN.shift(T0, 500),
        )
        del upstream.starts["KRW-OLD"]  # Upbit forgets it; the store does not
        upstream.calls.clear()
        events: list[ProgressEvent] = []
        summary = await collect(
            upstream,
            store,
            ["KRW-BTC", "KRW-OLD"],
            TF["1m"],
            since_ms=T0,
            until_ms=MIN.shift(T0, 400),
            now_ms=MIN.shift(T0, 500),
            progress=events.append,
        )
        old = [c.start_ms for c in await store.read("KRW-OLD", TF["1m"], 0, 2 * T0)]
        btc = [c.start_ms for c in await store.read("KRW-BTC", TF["1m"], 0, 2 * T0)]
    assert summary.delisted == ("KRW-OLD",) and btc == dense(400)
    assert old == dense(100)  # nothing more of it stored, whatever its first page said
    assert [c[0] for c in upstream.calls].count("KRW-OLD") <= 1
    assert [e.finished for e in events if e.market == "KRW-OLD"] == [True]


async def test_a_covered_range_costs_zero_upstream_calls(tmp_path: Path) -> None:
    upstream = FakeUpstream({"KRW-BTC": dense(500)})
    async with SQLiteStore(tmp_path / "db.sqlite") as store:

        async def run() -> CollectSummary:
            return await collect(
                upstream,
                store,
                ["KRW-BTC"],
                TF["1m"],
                since_ms=T0,
                until_ms=MIN.shift(T0, 500),
                now_ms=MIN.shift(T0, 600),
            )

        await run()
        upstream.calls.clear()
        upstream.market_calls = 0
        again = await run()
    assert upstream.calls == [] and upstream.market_calls == 0
    assert again.upstream_calls == 0 and again.candles_written == 0


async def test_a_page_that_finally_fails_is_raised_and_the_rerun_resumes(tmp_path: Path) -> None:
    upstream = FakeUpstream({"KRW-BTC": dense(1000)}, fail_at=3)
    async with SQLiteStore(tmp_path / "db.sqlite") as store:

        async def run() -> CollectSummary:
            return await collect(
                upstream,
                store,
                ["KRW-BTC"],
                TF["1m"],
                since_ms=T0,
                until_ms=MIN.shift(T0, 1000),
                now_ms=MIN.shift(T0, 1000),
            )

        with pytest.raises(UpstreamError, match="503"):
            await run()
        stored = await store.read("KRW-BTC", TF["1m"], 0, 2 * T0)
        assert [c.start_ms for c in stored] == dense(1000)[600:]  # two pages, no hole
        upstream.fail_at = None
        upstream.calls.clear()
        summary = await run()
        assert [call[1] for call in upstream.calls] == [MIN.shift(T0, n) for n in (600, 400, 200)]
        assert summary.candles_written == 600
        assert [c.start_ms for c in await store.read("KRW-BTC", TF["1m"], 0, 2 * T0)] == dense(1000)
