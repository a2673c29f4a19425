"""Trade sequencing as plain data: trades and connection epochs in, decisions out."""

from __future__ import annotations

import sys

from marketspine._base.memory import MemoryBudget
from marketspine._live.listener import Gap
from marketspine._live.trade_sequence import (
    KEPT_WHEN_EVICTED,
    SEEN_PER_MARKET,
    FillNeeded,
    TradeSequencer,
)
from marketspine.records import Trade


def trade(seq: int, market: str = "KRW-BTC") -> Trade:
    return Trade(market, 1_700_000_000_000 + seq, 100.0, 0.5, "BID", seq, 100.0, 1.0)


def test_trades_of_one_connection_are_delivered_in_order_and_duplicates_dropped() -> None:
    seq = TradeSequencer()
    assert seq.receive(trade(1), 1, subscribed=True) == [trade(1)]
    assert seq.receive(trade(2), 1, subscribed=True) == [trade(2)]
    assert seq.receive(trade(1), 1, subscribed=True) == []
    assert seq.duplicates == 1


def test_a_market_not_subscribed_is_ignored_until_it_has_a_track() -> None:
    seq = TradeSequencer()
    assert seq.receive(trade(1), 1, subscribed=False) == []
    assert seq.receive(trade(2), 1, subscribed=True) == [trade(2)]
    # Once tracked, frames are taken even if the caller no longer lists it as subscribed.
    assert seq.receive(trade(3), 1, subscribed=False) == [trade(3)]


def test_the_first_trade_after_a_reconnect_asks_for_a_fill_and_holds_the_rest() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (fill,) = seq.receive(trade(5), 2, subscribed=True)
    assert isinstance(fill, FillNeeded)
    assert (fill.market, fill.before, fill.after, fill.epoch) == ("KRW-BTC", trade(1), trade(5), 2)
    assert seq.receive(trade(6), 2, subscribed=True) == []  # held while the fill runs
    out = seq.filled(fill, [trade(2), trade(3), trade(4)], complete=True, reason="")
    assert out == [
        Gap("KRW-BTC", trade(1).ms, trade(5).ms, 3, True, ""),
        trade(2),
        trade(3),
        trade(4),
        trade(5),
        trade(6),
    ]
    assert (seq.gaps, seq.gap_trades) == (1, 3)
    assert seq.receive(trade(3), 2, subscribed=True) == []  # filled trades count as seen
    assert seq.receive(trade(7), 2, subscribed=True) == [trade(7)]


def test_an_incomplete_fill_says_why_and_still_releases_the_held_trades() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (fill,) = seq.receive(trade(9), 2, subscribed=True)
    assert isinstance(fill, FillNeeded)
    out = seq.filled(fill, [], complete=False, reason="no REST client")
    assert out == [Gap("KRW-BTC", trade(1).ms, trade(9).ms, 0, False, "no REST client"), trade(9)]


def test_a_market_forgotten_while_filling_delivers_nothing_from_that_fill() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (fill,) = seq.receive(trade(5), 2, subscribed=True)
    assert isinstance(fill, FillNeeded)
    seq.forget("KRW-BTC")
    assert seq.filled(fill, [trade(2)], complete=True, reason="") == []
    assert seq.gaps == 0
    # A later subscription starts afresh: no gap back to the old trades.
    assert seq.receive(trade(50), 3, subscribed=True) == [trade(50)]


def test_a_held_trade_from_yet_another_connection_asks_for_the_next_fill() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (first,) = seq.receive(trade(5), 2, subscribed=True)
    assert seq.receive(trade(9), 3, subscribed=True) == []
    assert isinstance(first, FillNeeded)
    out = seq.filled(first, [], complete=True, reason="")
    assert out[:2] == [Gap("KRW-BTC", trade(1).ms, trade(5).ms, 0, True, ""), trade(5)]
    (second,) = out[2:]
    assert isinstance(second, FillNeeded)
    assert (second.before, second.after, second.epoch) == (trade(5), trade(9), 3)


def test_markets_are_sequenced_independently() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1, "KRW-BTC"), 1, subscribed=True)
    # KRW-ETH has no earlier trade: nothing to fill across the reconnect.
    assert seq.receive(trade(1, "KRW-ETH"), 2, subscribed=True) == [trade(1, "KRW-ETH")]


def test_only_the_last_ids_are_remembered() -> None:
    seq = TradeSequencer()
    for n in range(1, SEEN_PER_MARKET + 2):
        seq.receive(trade(n), 1, subscribed=True)
    assert seq.receive(trade(1), 1, subscribed=True) == [trade(1)]  # forgotten: new again
    assert seq.receive(trade(SEEN_PER_MARKET + 1), 1, subscribed=True) == []


# A subscription change re-sends the whole request on the same connection: a new epoch whose
# answer starts with each code's latest trade as a SNAPSHOT frame.


def test_a_snapshot_already_delivered_adopts_the_new_epoch_without_a_fill() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    seq.receive(trade(2), 1, subscribed=True)
    assert seq.receive(trade(2), 2, subscribed=True, snapshot=True) == []
    assert seq.duplicates == 1
    # The epoch was adopted: the realtime trades after the snapshot need no fill.
    assert seq.receive(trade(3), 2, subscribed=True) == [trade(3)]
    assert seq.gaps == 0


def test_a_snapshot_not_delivered_asks_for_the_hole_before_it() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (fill,) = seq.receive(trade(4), 2, subscribed=True, snapshot=True)
    assert isinstance(fill, FillNeeded)
    assert (fill.before, fill.after, fill.epoch) == (trade(1), trade(4), 2)
    assert seq.receive(trade(5), 2, subscribed=True) == []  # held while the fill runs
    out = seq.filled(fill, [trade(2), trade(3)], complete=True, reason="")
    assert out == [Gap("KRW-BTC", trade(1).ms, trade(4).ms, 2, True, ""), *map(trade, range(2, 6))]


def test_a_realtime_trade_first_in_a_new_epoch_asks_for_a_fill() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (fill,) = seq.receive(trade(3), 2, subscribed=True)
    assert isinstance(fill, FillNeeded)
    assert (fill.before, fill.after, fill.epoch) == (trade(1), trade(3), 2)


def test_an_unseen_snapshot_asks_for_a_fill_even_in_the_same_epoch() -> None:
    # A frame of the old subscription, read after the request went out, already carried
    # the new epoch: the snapshot still marks where the new answer starts.
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (first,) = seq.receive(trade(2), 2, subscribed=True)  # late frame of the old answer
    assert seq.receive(trade(5), 2, subscribed=True, snapshot=True) == []  # held
    assert isinstance(first, FillNeeded)
    out = seq.filled(first, [], complete=True, reason="")
    assert out[:2] == [Gap("KRW-BTC", trade(1).ms, trade(2).ms, 0, True, ""), trade(2)]
    (second,) = out[2:]
    assert isinstance(second, FillNeeded)
    assert (second.before, second.after) == (trade(2), trade(5))
    out = seq.filled(second, [trade(3), trade(4)], complete=True, reason="")
    assert out[1:] == [trade(3), trade(4), trade(5)]


def test_a_seen_snapshot_held_during_a_fill_is_dropped_once_replayed() -> None:
    seq = TradeSequencer()
    seq.receive(trade(1), 1, subscribed=True)
    (fill,) = seq.receive(trade(3), 2, subscribed=True)
    assert seq.receive(trade(3), 2, subscribed=True, snapshot=True) == []
    assert isinstance(fill, FillNeeded)
    out = seq.filled(fill, [trade(2)], complete=True, reason="")
    assert out[1:] == [trade(2), trade(3)]
    assert seq.duplicates == 1


def test_remembered_ids_are_charged_to_the_memory_budget_and_released() -> None:
    budget = MemoryBudget(10**9)
    seq = TradeSequencer(budget)
    for n in range(1, 101):
        seq.receive(trade(n, "KRW-BTC"), 1, subscribed=True)
        seq.receive(trade(n, "KRW-ETH"), 1, subscribed=True)
    held = budget.statistics()
    assert held.entries == 2
    assert held.used_bytes >= 2 * 100 * sys.getsizeof(10**16)  # the ids themselves at least
    seq.forget("KRW-BTC")
    seq.forget("KRW-ETH")
    assert budget.statistics().used_bytes == 0
    assert budget.statistics().entries == 0


def test_ids_of_every_market_ever_seen_stay_within_the_budget() -> None:
    # 300 markets x 2 windows of trades each: without the budget that would be 300 full
    # windows; with it, the least recently traded markets keep only their newest ids.
    budget = MemoryBudget(2_000_000)
    seq = TradeSequencer(budget)
    for m in range(300):
        for n in range(1, 2 * SEEN_PER_MARKET):
            seq.receive(trade(n, f"KRW-M{m}"), 1, subscribed=True)
        assert budget.used_bytes <= budget.limit_bytes
    remembered = [seq.remembered(f"KRW-M{m}") for m in range(300)]
    assert max(remembered) == SEEN_PER_MARKET
    assert 0 < sum(1 for n in remembered if n == SEEN_PER_MARKET) < 300
    assert set(remembered) == {KEPT_WHEN_EVICTED, SEEN_PER_MARKET}
    assert remembered[-1] == SEEN_PER_MARKET  # the market that traded last keeps its ids
    assert remembered[0] == KEPT_WHEN_EVICTED  # the first one kept only its newest ids


def test_a_market_whose_ids_were_evicted_still_fills_its_gap_after_a_reconnect() -> None:
    budget = MemoryBudget(100_000)
    seq = TradeSequencer(budget)
    seq.receive(trade(1, "KRW-BTC"), 1, subscribed=True)
    for m in range(20):  # other markets trade later and push KRW-BTC's ids out
        for n in range(1, 200):
            seq.receive(trade(n, f"KRW-M{m}"), 1, subscribed=True)
    assert seq.remembered("KRW-BTC") == 1  # its newest ids stay: here its only one
    # A snapshot of its last trade is still known: the new answer is adopted, no fill.
    assert seq.receive(trade(1, "KRW-BTC"), 2, subscribed=True, snapshot=True) == []
    out = seq.receive(trade(5, "KRW-BTC"), 3, subscribed=True)
    assert len(out) == 1 and isinstance(out[0], FillNeeded)
    assert out[0].before == trade(1, "KRW-BTC")


def test_two_sequencers_on_one_budget_each_lose_only_their_own_ids() -> None:
    # A shared stream's sequencer and its own Stream's share Spine's budget, which holds
    # two markets' full windows of ids (about 22 KB each) but not three.
    budget = MemoryBudget(50_000)
    first, second = TradeSequencer(budget), TradeSequencer(budget)
    for n in range(1, SEEN_PER_MARKET):
        first.receive(trade(n, "KRW-BTC"), 1, subscribed=True)
    for n in range(1, 4 * SEEN_PER_MARKET):
        second.receive(trade(n, "KRW-ETH"), 1, subscribed=True)
        second.receive(trade(n, "KRW-XRP"), 1, subscribed=True)
    assert first.remembered("KRW-BTC") == KEPT_WHEN_EVICTED
    assert second.remembered("KRW-XRP") > 0  # the market that traded last
    assert budget.used_bytes <= budget.limit_bytes
