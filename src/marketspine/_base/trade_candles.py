"""Candles built from trades, and how they compare with Upbit's (pure: trades in, candles and
differences out). Used by ``marketspine verify`` to check a recording against REST candles."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..records import Candle, Trade
from .timeframes import Timeframe

__all__ = ["WindowDifference", "candles_from_trades", "compare_candles"]

# Volume and value are sums of floats on our side, of decimals on Upbit's: equal within this.
RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-8


def candles_from_trades(trades: Iterable[Trade], timeframe: Timeframe) -> list[Candle]:
    """The candles of ``trades`` (one market), ascending: open and close the first and last
    trade by (time, sequential_id), volume the sum of sizes, value the sum of price × size,
    ``last_trade_ms`` the last trade's time. Windows without trades have no candle, as on
    Upbit."""
    ordered = sorted(trades, key=lambda t: (t.ms, t.seq))
    candles: list[Candle] = []
    for trade in ordered:
        start = timeframe.floor(trade.ms)
        last = candles[-1] if candles else None
        if last is None or last.start_ms != start:
            candles.append(
                Candle(trade.market, timeframe.name, start, trade.price, trade.price, trade.price,
                       trade.price, trade.volume, trade.price * trade.volume, trade.ms)
            )  # fmt: skip
            continue
        candles[-1] = Candle(
            trade.market, timeframe.name, start, last.open, max(last.high, trade.price),
            min(last.low, trade.price), trade.price, last.volume + trade.volume,
            last.value + trade.price * trade.volume, trade.ms,
        )  # fmt: skip
    return candles


@dataclass(frozen=True, slots=True)
class WindowDifference:
    """One window whose candle built from trades differs from upstream's: which fields, and
    both candles (None where that side has none)."""

    start_ms: int
    fields: tuple[str, ...]
    built: Candle | None
    upstream: Candle | None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def compare_candles(built: Sequence[Candle], upstream: Sequence[Candle]) -> list[WindowDifference]:
    """The windows where ``built`` and ``upstream`` differ: prices exactly, volume and value
    within float rounding, a candle on one side only. Ascending by window."""
    ours = {c.start_ms: c for c in built}
    theirs = {c.start_ms: c for c in upstream}
    out = []
    for start in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(start), theirs.get(start)
        if a is None or b is None:
            out.append(WindowDifference(start, ("missing",), a, b))
            continue
        fields = tuple(
            name
            for name in ("open", "high", "low", "close", "volume", "value")
            if not (
                getattr(a, name) == getattr(b, name)
                if name in ("open", "high", "low", "close")
                else _close(getattr(a, name), getattr(b, name))
            )
        )
        if fields:
            out.append(WindowDifference(start, fields, a, b))
    return out
