"""Joining a REST trade snapshot to the live stream, as plain data, and with the REST walk
over a history listed as Upbit lists it (newest first; trades of one millisecond in an
order their sequential ids do not tell)."""

from __future__ import annotations

from helpers import ListedTrades

from marketspine._live.trade_fill import Walk, walk_back
from marketspine._live.trade_join import JOIN_HOLD_MAX, TradeJoin, WalkNeeded
from marketspine.records import Trade

BTC = "KRW-BTC"
T0 = 1_700_000_000_000


def trade(ms: int, n: int = 0) -> Trade:
    """A trade ``ms`` after T0; ``n`` tells trades of one millisecond apart."""
    return Trade(BTC, T0 + ms, 100.0, 0.5, "BID", (T0 + ms) * 10_000 + n, 100.0, 1.0)


async def walk(history: ListedTrades, need: Trade | WalkNeeded) -> Walk:
    assert isinstance(need, WalkNeeded), need  # what the join asked for, not a trade
    return await walk_back(history, need.market, need.before, need.after)


def test_the_snapshots_own_trade_joins_at_once() -> None:
    join = TradeJoin(trade(5))
    assert join.receive(trade(5)) == [trade(5)]
    assert join.joined
    assert join.receive(trade(6)) == [trade(6)]


def test_earlier_trades_are_covered_by_the_snapshot() -> None:
    join = TradeJoin(trade(5))
    assert join.receive(trade(3)) == []
    assert join.receive(trade(4)) == []
    assert join.receive(trade(5)) == [trade(5)]
    assert join.receive(trade(7)) == [trade(7)]
    assert join.dropped == 2 and join.filled == 0


async def test_a_later_trade_fills_the_hole_from_rest_then_the_held_trades() -> None:
    history = ListedTrades([trade(9), trade(8), trade(7), trade(6), trade(5), trade(4)])
    join = TradeJoin(trade(5))
    (need,) = join.receive(trade(8))
    assert need == WalkNeeded(BTC, trade(5), trade(8))
    assert join.receive(trade(9)) == []  # held while the walk runs
    assert join.walked(await walk(history, need)) == [trade(6), trade(7), trade(8), trade(9)]
    assert join.joined and join.filled == 2 and not join.incomplete
    assert join.receive(trade(10)) == [trade(10)]


async def test_the_same_millisecond_goes_by_upbits_listing_not_by_id() -> None:
    # Listed newest first, and the id ending in 0 is the newer of the two at ms 5.
    history = ListedTrades([trade(6), trade(5, 0), trade(5, 1), trade(4)])
    # The stream starts at the older one: the snapshot (the newer) covers it.
    join = TradeJoin(trade(5, 0))
    (need,) = join.receive(trade(5, 1))
    assert join.receive(trade(5, 0)) == []
    assert join.receive(trade(6)) == []
    assert join.walked(await walk(history, need)) == [trade(5, 0), trade(6)]
    assert join.joined and join.dropped == 1 and join.filled == 0
    # The other way round: the snapshot is the older one, the stream's first the newer.
    join = TradeJoin(trade(5, 1))
    (need,) = join.receive(trade(5, 0))
    assert join.walked(await walk(history, need)) == [trade(5, 0)]
    assert join.joined and join.dropped == 0


async def test_a_held_trade_found_before_the_snapshot_asks_for_the_next_walk() -> None:
    history = ListedTrades([trade(6), trade(5, 2), trade(5, 0), trade(5, 1), trade(4)])
    join = TradeJoin(trade(5, 0))
    (need,) = join.receive(trade(5, 1))
    assert join.receive(trade(5, 0)) == []
    assert join.receive(trade(5, 2)) == []
    # 5/1 comes before the snapshot: dropped; 5/0 is the snapshot: joined; 5/2 follows.
    assert join.walked(await walk(history, need)) == [trade(5, 0), trade(5, 2)]
    assert join.joined and history.calls == 1


async def test_a_walk_that_cannot_finish_joins_with_what_it_found() -> None:
    history = ListedTrades([trade(9), trade(8), trade(7), trade(6), trade(5)], fail=True)
    join = TradeJoin(trade(5))
    (need,) = join.receive(trade(8))
    assert join.walked(await walk(history, need)) == [trade(8)]
    assert join.joined and join.incomplete.startswith("REST trades failed")


async def test_no_more_than_the_cap_is_held_while_a_walk_runs() -> None:
    history = ListedTrades([trade(9), trade(8), trade(7), trade(6), trade(5)])
    join = TradeJoin(trade(5))
    (need,) = join.receive(trade(8))
    later = [trade(9 + i) for i in range(JOIN_HOLD_MAX)]
    for held in later[:-1]:
        assert join.receive(held) == []
    # One more than the cap: the join ends, what it held goes out, the hole is named.
    assert join.receive(later[-1]) == [trade(8), *later]
    assert join.joined and "more than 10000 live trades" in join.incomplete
    # The walk's late answer adds nothing; the stream goes on.
    assert join.walked(await walk(history, need)) == []
    assert join.filled == 0
    assert join.receive(trade(20_000)) == [trade(20_000)]
