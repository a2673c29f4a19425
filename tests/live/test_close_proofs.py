"""Closes proven by the trade stream (``LiveState.closes``), on hand-made events and a
hand-set liveness: a window is handed out only when every trade of it was seen — the run of
delivered trades began before it, under the current epoch, and a later trade has arrived —
and never across a gap (even a filled one), a reconnect, dropped trades, an unsubscription
or a trade that arrived late."""

from __future__ import annotations

from marketspine._base.timeframes import parse_timeframe
from marketspine._live.closes import CloseProof
from marketspine._live.listener import Gap, Health, Overflow
from marketspine._live.state import LiveState
from marketspine._live.stream import Liveness
from marketspine.records import Candle, Trade

M = "KRW-BTC"
MINUTE = parse_timeframe("1m")
T0 = 1_700_000_040_000  # a minute start
_seq = iter(range(10**9))


def trade(ms: int, price: float, volume: float = 1.0, market: str = M) -> Trade:
    return Trade(market, ms, price, volume, "BID", ms * 10_000 + next(_seq) % 10_000, 1.0, 0.0)


def following(liveness: list[Liveness | None]) -> LiveState:
    state = LiveState(clock=lambda: 0.0)
    state.follow_liveness(lambda: liveness[0])
    state.closes.follow(M, MINUTE)
    return state


def test_a_window_seen_whole_is_proven_once_a_later_trade_arrives() -> None:
    state = following([Liveness(epoch=1, age_s=0.0)])
    state.apply(trade(T0 - 5_000, 99.0))  # the run begins before the window
    inside = [trade(T0 + 1_000, 100.0, 0.5), trade(T0 + 20_000, 103.0, 0.25)]
    inside.append(trade(T0 + 59_999, 101.0, 2.0))
    for t in inside:
        state.apply(t)
    # Nothing after the window yet: a trade of it may still be on its way.
    assert state.closes.close(M, "1m", T0) == (CloseProof.PENDING, None)
    state.apply(trade(T0 + 60_000, 102.0))
    proof, candle = state.closes.close(M, "1m", T0)
    assert proof is CloseProof.PROVEN
    value = sum(t.price * t.volume for t in inside)
    assert candle == Candle(M, "1m", T0, 100.0, 103.0, 100.0, 101.0, 2.75, value, T0 + 59_999)
    # A window without a trade, between two that had some, is proven empty.
    state.apply(trade(T0 + 180_000, 104.0))
    assert state.closes.close(M, "1m", T0 + 120_000) == (CloseProof.PROVEN, None)
    # The candle of a window before the last closed one is gone: not handed out.
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE


def test_a_window_that_began_before_the_run_or_the_follow_is_unprovable() -> None:
    liveness: list[Liveness | None] = [Liveness(epoch=1, age_s=0.0)]
    state = LiveState(clock=lambda: 0.0)
    state.follow_liveness(lambda: liveness[0])
    state.apply(trade(T0 + 10_000, 100.0))  # the first trade seen is inside the window
    state.closes.follow(M, MINUTE)
    state.apply(trade(T0 + 70_000, 100.0))
    state.apply(trade(T0 + 130_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE
    # Followed from T0 + 10 s on: the next window was built from its first trade.
    assert state.closes.close(M, "1m", T0 + 60_000)[0] is CloseProof.PROVEN


def test_a_gap_even_a_filled_one_breaks_the_proof_until_a_window_after_it() -> None:
    state = following([Liveness(epoch=1, age_s=0.0)])
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 1_000, 100.0))
    # A reconnect's hole, filled from REST: the filled trades and the one after it follow.
    state.apply(Gap(M, T0 + 1_000, T0 + 30_000, 1, complete=True))
    state.apply(trade(T0 + 15_000, 101.0))
    state.apply(trade(T0 + 30_000, 102.0))
    state.apply(trade(T0 + 61_000, 102.0))
    state.apply(trade(T0 + 121_000, 102.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE
    assert state.closes.close(M, "1m", T0 + 60_000)[0] is CloseProof.PROVEN


def test_a_reconnect_lost_trades_or_an_unsubscription_break_the_proof() -> None:
    liveness: list[Liveness | None] = [Liveness(epoch=1, age_s=0.0)]
    state = following(liveness)
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 1_000, 100.0))
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.PROVEN
    liveness[0] = Liveness(epoch=2, age_s=0.0)  # a new connection since: proves nothing
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE

    state = following([Liveness(epoch=1, age_s=0.0)])
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(Health("reconnecting", "connection lost"))
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE

    state = following([Liveness(epoch=1, age_s=0.0)])
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(Overflow("trade", M, 3))  # the consumer fell behind: trades were dropped
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE

    state = following([Liveness(epoch=1, age_s=0.0)])
    state.apply(trade(T0 - 5_000, 99.0))
    state.unsubscribed("trade", M)
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE


def test_a_trade_arriving_after_a_later_one_taints_its_window() -> None:
    state = following([Liveness(epoch=1, age_s=0.0)])
    heard: list[tuple[str, str, int]] = []
    state.closes.on_late = lambda market, timeframe, start: heard.append((market, timeframe, start))
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 1_000, 100.0))
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.PROVEN
    state.apply(trade(T0 + 59_000, 100.0))  # late: upstream's candle may hold it
    assert heard == [(M, "1m", T0)]
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE


def test_without_a_live_stream_or_a_follow_nothing_is_proven() -> None:
    state = following([None])
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE
    state = following([Liveness(epoch=1, age_s=0.0)])
    state.closes.unfollow(M, "1m")
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 61_000, 100.0))
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.UNPROVABLE


def test_a_quiet_window_is_proven_once_the_stream_is_flushed() -> None:
    state = following([Liveness(epoch=1, age_s=0.0)])
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 30_000, 100.0, 2.0))
    # No trade after the window: only a flushed stream (a ping's round trip after the close,
    # everything before it applied) proves the window's last trade was its last.
    assert state.closes.close(M, "1m", T0)[0] is CloseProof.PENDING
    proof, candle = state.closes.close(M, "1m", T0, flushed=True)
    assert proof is CloseProof.PROVEN
    assert candle == Candle(M, "1m", T0, 100.0, 100.0, 100.0, 100.0, 2.0, 200.0, T0 + 30_000)
    # A window without any trade since is proven empty the same way.
    assert state.closes.close(M, "1m", T0 + 60_000, flushed=True) == (CloseProof.PROVEN, None)
    # Flushing proves nothing about a window the run did not see whole.
    assert state.closes.close(M, "1m", T0 - 60_000, flushed=True)[0] is CloseProof.UNPROVABLE


def test_following_later_starts_from_the_trades_held() -> None:
    liveness: list[Liveness | None] = [Liveness(epoch=1, age_s=0.0)]
    state = LiveState(clock=lambda: 0.0, trades_per_market=3)
    state.follow_liveness(lambda: liveness[0])
    state.apply(trade(T0 - 5_000, 99.0))
    state.apply(trade(T0 + 1_000, 100.0))
    state.apply(trade(T0 + 2_000, 101.0))
    # The window began before the follow, but every trade of it is still held.
    state.follow_closes(M, MINUTE)
    state.apply(trade(T0 + 61_000, 100.0))
    proof, candle = state.closes.close(M, "1m", T0)
    assert proof is CloseProof.PROVEN and candle is not None
    assert (candle.open, candle.close, candle.volume) == (100.0, 101.0, 2.0)
    # Three trades held at most: a window that began before the oldest one held is not whole
    # (nothing says no trade of it came before that one).
    state.apply(trade(T0 + 62_000, 100.0))
    state.apply(trade(T0 + 63_000, 100.0))
    state.closes.unfollow(M, "1m")
    state.follow_closes(M, MINUTE)
    state.apply(trade(T0 + 121_000, 100.0))
    assert state.closes.close(M, "1m", T0 + 60_000)[0] is CloseProof.UNPROVABLE
