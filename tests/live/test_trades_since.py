"""``trades_since`` over plain event lists and a REST history listed as Upbit lists it
(newest first): what is filled, dropped, passed through, and when a ``Gap`` says the
trades since the caller's could not all be fetched."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from helpers import ListedTrades

from marketspine import Gap, Health, Trade
from marketspine._live.trade_fill import FILL_MAX_PAGES, FILL_PAGE_SIZE
from marketspine._live.trades_since import find_trade, trades_since

BTC = "KRW-BTC"
ETH = "KRW-ETH"
T0 = 1_700_000_000_000


def trade(ms: int, market: str = BTC) -> Trade:
    return Trade(market, T0 + ms, 100.0, 0.5, "BID", (T0 + ms) * 10_000, 100.0, 1.0)


async def live(events: Sequence[Any]) -> AsyncGenerator[Any, None]:
    for event in events:
        yield event


async def run(
    events: Sequence[Any], since: dict[str, Trade | int], rest: ListedTrades
) -> list[Any]:
    return [e async for e in trades_since(live(events), since, rest)]


def upto(ms: int) -> list[Trade]:
    """BTC's history up to ``ms``, newest first."""
    return [trade(t) for t in range(ms, -1, -1)]


async def test_the_hole_is_filled_in_order_and_nothing_is_repeated() -> None:
    rest = ListedTrades(upto(9))
    other = trade(7, ETH)
    got = await run([Health("connected", ""), other, trade(8), trade(9)], {BTC: trade(4)}, rest)
    assert got == [Health("connected", ""), other, *map(trade, range(5, 10))]
    assert rest.calls == 1


async def test_older_trades_and_the_callers_own_are_dropped() -> None:
    rest = ListedTrades(upto(9))
    got = await run([trade(2), trade(3), trade(4), trade(5)], {BTC: trade(4)}, rest)
    assert got == [trade(5)]
    assert rest.calls == 0


async def test_a_sequential_id_is_looked_up_for_its_time_then_joined() -> None:
    rest = ListedTrades(upto(9))
    assert await run([trade(7), trade(8)], {BTC: trade(4).seq}, rest) == [
        trade(5),
        trade(6),
        trade(7),
        trade(8),
    ]
    assert rest.calls == 2  # the lookup, the walk
    newer = ListedTrades(upto(9))
    assert await run([trade(2), trade(5), trade(6)], {BTC: trade(5).seq}, newer) == [trade(6)]
    itself = ListedTrades(upto(9))
    assert await run([trade(4), trade(5)], {BTC: trade(4).seq}, itself) == [trade(5)]
    assert itself.calls == 0


async def test_a_sequential_id_not_found_is_a_gap_and_the_stream_goes_on() -> None:
    rest = ListedTrades(upto(9))
    (gap, *after) = await run([trade(8), trade(9)], {BTC: 12345}, rest)
    assert gap == Gap(BTC, 0, trade(8).ms, 0, False, gap.reason)
    assert "12345 is not in KRW-BTC's REST history" in gap.reason
    assert after == [trade(8), trade(9)]


async def test_a_failing_walk_is_a_gap_before_the_live_trades() -> None:
    rest = ListedTrades(upto(9), fail=True)
    got = await run([trade(8), trade(9)], {BTC: trade(4)}, rest)
    gap = Gap(BTC, trade(4).ms, trade(8).ms, 0, False, "REST trades failed: upstream is down")
    assert got == [gap, trade(8), trade(9)]


async def test_a_hole_too_long_to_walk_is_a_gap_before_what_was_found() -> None:
    longest = FILL_MAX_PAGES * FILL_PAGE_SIZE
    rest = ListedTrades(upto(longest + 10))
    got = await run([trade(longest + 10)], {BTC: trade(0)}, rest)
    gap, *trades = got
    assert isinstance(gap, Gap) and not gap.complete and "longer than" in gap.reason
    assert gap.filled == len(trades) - 1 == longest  # the walk's pages, then the live one
    assert trades[-1] == trade(longest + 10)
    assert [t.ms for t in trades] == sorted(t.ms for t in trades)


async def test_find_trade_says_why_it_cannot() -> None:
    assert await find_trade(ListedTrades(upto(3)), BTC, trade(1).seq) == trade(1)
    assert "failed" in str(await find_trade(ListedTrades(upto(3), fail=True), BTC, 1))
    assert "no REST client" in str(await find_trade(None, BTC, 1))
