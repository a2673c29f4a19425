"""Every Spine answer carries ``.meta`` (sources, upstream calls, elapsed, priority) and stays
a plain list for old callers; ``statistics()`` counts every upstream call, the clock-sync
ticker included."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from helpers import answer_meta

from marketspine._budget.rules import Priority
from marketspine._spine.spine import Spine
from marketspine.records import Orderbook, Ticker


@pytest.fixture
def spine(sim_spine: Spine) -> Spine:
    return sim_spine


async def sim_requests(app: Any) -> int:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as http:
        stats = (await http.get("/sim/stats")).json()
    return int(sum(stats["requests"]["by_group"].values()))


async def test_every_answer_carries_meta_and_statistics_count_every_call(
    spine: Spine, sim_app: Any, sim_now_ms: int
) -> None:
    # First a request whose first step is the clock-sync ticker (a range reaching the
    # forming window's hour), then the market list and one page.
    candles = await spine.candles("KRW-ETH", "1h", start=sim_now_ms - 10 * 3_600_000)
    assert candles.meta.priority == Priority.NORMAL
    assert spine.statistics().upstream_calls == await sim_requests(sim_app) == 4
    tickers = await spine.tickers(["KRW-BTC", "KRW-ETH"], max_age_s=60)
    assert isinstance(tickers, list) and [t.market for t in tickers] == ["KRW-BTC", "KRW-ETH"]
    assert tickers.meta.sources == ("rest",) and tickers.meta.upstream_calls == 1
    assert tickers.meta.priority == Priority.HIGH and tickers.meta.elapsed_ms > 0
    again = await spine.tickers(["KRW-BTC", "KRW-ETH"], max_age_s=60)
    assert again.meta.sources == ("memory",) and again.meta.upstream_calls == 0
    books = await spine.orderbooks(["KRW-BTC"], priority=Priority.CRITICAL)
    assert books[0].market == "KRW-BTC" and books.meta.priority == Priority.CRITICAL
    assert books.meta.sources == ("rest",) and books.meta.upstream_calls == 1
    trades = await spine.trades("KRW-BTC", count=600, priority=Priority.LOW)
    assert len(trades) == 600 and trades[:2] == list(trades)[:2]
    assert trades.meta.upstream_calls == 2 and trades.meta.priority == Priority.LOW
    krw = await spine.tickers(quote="KRW")
    assert krw.meta.sources == ("rest",)
    # Every request upstream saw is counted, the clock-sync ticker included.
    assert spine.statistics().upstream_calls == await sim_requests(sim_app)


async def test_single_ticker_and_orderbook_carry_meta_and_stay_plain_records(
    spine: Spine, sim_app: Any
) -> None:
    ticker = await spine.ticker("KRW-BTC", max_age_s=60, priority=Priority.CRITICAL)
    assert answer_meta(ticker).sources == ("rest",) and answer_meta(ticker).upstream_calls == 1
    assert answer_meta(ticker).priority == Priority.CRITICAL and answer_meta(ticker).elapsed_ms > 0
    cached = await spine.ticker("KRW-BTC", max_age_s=60)
    assert answer_meta(cached).sources == ("memory",) and answer_meta(cached).upstream_calls == 0
    # Still a Ticker: equal to, and hashing like, the plain record of the list form.
    (plain,) = await spine.tickers(["KRW-BTC"], max_age_s=60)
    assert isinstance(ticker, Ticker) and ticker == plain and plain == ticker
    assert (ticker != plain) is False and len({ticker, plain, cached}) == 1
    assert msgspec.json.decode(msgspec.json.encode(ticker), type=Ticker) == plain
    assert msgspec.structs.replace(ticker, price=1.0) != plain
    book = await spine.orderbook("KRW-BTC", max_age_s=60, priority=Priority.LOW)
    assert isinstance(book, Orderbook) and book.market == "KRW-BTC"
    assert answer_meta(book).sources == ("rest",) and answer_meta(book).upstream_calls == 1
    assert answer_meta(book).priority == Priority.LOW
    (plain_book,) = await spine.orderbooks(["KRW-BTC"], max_age_s=60)
    assert book == plain_book and hash(book) == hash(plain_book)
    assert answer_meta(await spine.orderbook("KRW-BTC", max_age_s=60)).sources == ("memory",)
    assert spine.statistics().upstream_calls == await sim_requests(sim_app)


async def test_markets_carry_meta(spine: Spine, sim_app: Any) -> None:
    listed = await spine.markets()
    assert isinstance(listed, list) and any(m.market == "KRW-BTC" for m in listed)
    assert listed.meta.sources == ("rest",) and listed.meta.upstream_calls == 1
    cached = await spine.markets()
    assert cached == listed and cached.meta.sources == ("memory",)
    assert cached.meta.upstream_calls == 0
    with_delisted = await spine.markets(include_delisted=True)
    assert with_delisted.meta.sources == ("memory", "database")
    assert spine.statistics().upstream_calls == await sim_requests(sim_app)
