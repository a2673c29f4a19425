"""Candles built from trades: open/close by time then sequential_id, sums, no empty windows;
compared with upstream's, prices exactly and sums within float rounding."""

from __future__ import annotations

from marketspine._base.timeframes import TIMEFRAMES
from marketspine._base.trade_candles import candles_from_trades, compare_candles
from marketspine.records import Candle, Trade

T0 = 1_790_000_040_000 // 60_000 * 60_000
M = "KRW-BTC"


def trade(ms: int, price: float, volume: float, seq: int) -> Trade:
    return Trade(M, ms, price, volume, "BID", seq, 1.0, 0.0)


def test_candles_follow_time_then_sequential_id_and_skip_empty_windows() -> None:
    trades = [trade(T0 + 5, 10.0, 0.1, 3), trade(T0 + 5, 12.0, 0.2, 2),
              trade(T0 + 59_999, 9.0, 0.3, 9), trade(T0 + 180_000, 11.0, 1.0, 20)]  # fmt: skip
    built = candles_from_trades(trades[::-1], TIMEFRAMES["1m"])
    assert [c.start_ms for c in built] == [T0, T0 + 180_000]
    first = built[0]
    assert (first.open, first.high, first.low, first.close) == (12.0, 12.0, 9.0, 9.0)
    assert abs(first.volume - 0.6) < 1e-12 and abs(first.value - (1.0 + 2.4 + 2.7)) < 1e-12
    assert first.last_trade_ms == T0 + 59_999


def test_a_window_differs_by_price_or_sum_or_existence() -> None:
    tf = TIMEFRAMES["1m"]
    built = candles_from_trades([trade(T0 + i * 60_000, 10.0, 0.1, i) for i in range(3)], tf)
    same = [Candle(M, "1m", c.start_ms, 10.0, 10.0, 10.0, 10.0, 0.1 + 1e-17, 1.0, 0) for c in built]
    assert compare_candles(built, same) == []
    other = [same[0], Candle(M, "1m", T0 + 60_000, 10.0, 10.5, 10.0, 10.0, 0.1, 1.0, 0)]
    found = compare_candles(built, other)
    assert [(d.start_ms - T0, d.fields) for d in found] == [
        (60_000, ("high",)),
        (120_000, ("missing",)),
    ]
    assert found[1].upstream is None and found[1].built == built[2]
